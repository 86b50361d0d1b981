// Package proxybuf holds the copy buffers of the gateway's and the connector's reverse proxies, pooled rather than
// allocated per request (httputil.ReverseProxy takes 32 KiB each by default).
package proxybuf

import (
	"net/http/httputil"
	"sync"
)

// Size is 64 KiB: a response body read through the tunnel often has that much ready, and a larger write means fewer
// TLS records and write calls.
const Size = 64 << 10

// New returns a pool of Size-byte buffers for httputil.ReverseProxy.BufferPool.
func New() httputil.BufferPool {
	return &pool{p: sync.Pool{New: func() any { return make([]byte, Size) }}}
}

type pool struct{ p sync.Pool }

func (b *pool) Get() []byte  { return b.p.Get().([]byte) }
func (b *pool) Put(p []byte) { b.p.Put(p) }

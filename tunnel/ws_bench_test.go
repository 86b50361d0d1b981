package tunnel

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// The WebSocket layer alone, in memory: what framing, masking and parsing cost per yamux data frame of 32 KiB (the
// proxies' copy size), without TLS or a network.
//
//	go test -run '^$' -bench WS -benchmem ./tunnel

type discardConn struct{}

func (discardConn) Read(p []byte) (int, error)  { return 0, io.EOF }
func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Close() error                { return nil }

func BenchmarkWSWriteMasked32K(b *testing.B) {
	c := newWSConn(discardConn{}, nil, true, nil, nil, time.Minute)
	hdr, body := yamuxHeader(yamuxTypeData, 32<<10), make([]byte, 32<<10)
	b.SetBytes(int64(len(hdr) + len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(body); err != nil {
			b.Fatal(err)
		}
	}
}

// loopReader repeats its bytes forever.
type loopReader struct {
	b   []byte
	pos int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.pos:])
	r.pos = (r.pos + n) % len(r.b)
	return n, nil
}

func BenchmarkWSReadMasked32K(b *testing.B) {
	w := &recorder{}
	client := newWSConn(w, nil, true, nil, nil, time.Minute)
	frame := append(yamuxHeader(yamuxTypeData, 32<<10), make([]byte, 32<<10)...)
	client.Write(frame)
	server := newWSConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{&loopReader{b: w.all()}, io.Discard, io.NopCloser(nil)}, nil, false, nil, nil, time.Minute)
	buf := make([]byte, len(frame))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.ReadFull(server, buf); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(buf[:yamuxHeaderSize], frame[:yamuxHeaderSize]) {
		b.Fatal("read another frame than was written")
	}
}

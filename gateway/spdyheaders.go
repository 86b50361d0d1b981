package gateway

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Bounds on the client's SPDY header blocks the gateway inflates. Kubernetes' stream headers (streamType, port,
// requestID) take under 100 bytes a block; past any bound the gateway stops following the session, which then
// goes on untouched but ends without a farewell. A header block is zlib-compressed, so its compressed size bounds
// nothing: 24 KB inflate to 24 MiB.
const (
	maxSPDYHeaders     = 32      // name/value pairs in one block
	maxSPDYHeaderField = 1 << 10 // bytes of one name or one value
	maxSPDYHeaderBlock = 8 << 10 // inflated bytes of one block
	// maxSPDYSessionHeaders bounds the inflated header bytes of a whole session: port-forward opens two streams
	// per forwarded connection (about 140 bytes of headers), so about 30,000 connections.
	maxSPDYSessionHeaders = 4 << 20
)

// errSPDYHeaders is returned for a header block past a bound or unreadable: the shared compression context can no
// longer be trusted, so nothing later is decoded either.
var errSPDYHeaders = errors.New("SPDY header block not followed")

// spdyHeaderDecoder inflates the header blocks one side of a SPDY/3 session sends. They share one zlib stream
// (with spdyDictionary) across frames, each block ending at a sync flush, so every block must be inflated in order
// and read to its end for the next to decode.
//
// It reads a block exactly as far as its name/value pairs go, through one fixed buffer, and keeps only what the
// gateway needs (is this an error stream?): nothing is allocated per header or per frame, and the work per frame
// and per session is bounded by the inflated bytes it reads (maxSPDYHeaderBlock, maxSPDYSessionHeaders) plus the
// inflater's 32 KiB window. spdystream's own Framer, even with its header count and field size options, splits
// every value on NUL into a []string, so that a few KiB of compressed NULs still cost MiBs of allocation per frame
// (BenchmarkSPDYHeaderBomb).
type spdyHeaderDecoder struct {
	src  bytes.Buffer  // compressed bytes the inflater has not consumed yet (a bytes.Buffer is a flate.Reader: no read-ahead)
	z    io.ReadCloser // nil before the first block
	left int           // inflated bytes the session may still read
	buf  [maxSPDYHeaderField]byte
}

func newSPDYHeaderDecoder() *spdyHeaderDecoder {
	return &spdyHeaderDecoder{left: maxSPDYSessionHeaders}
}

// isErrorStream inflates one compressed header block and reports whether its streamtype header (first value) is
// "error", as Kubernetes' streams name exec's and port-forward's error streams. Any error is errSPDYHeaders
// wrapped with the reason; after one the decoder must not be used again.
func (d *spdyHeaderDecoder) isErrorStream(block []byte) (bool, error) {
	d.src.Write(block)
	if d.z == nil {
		z, err := zlib.NewReaderDict(&d.src, []byte(spdyDictionary))
		if err != nil {
			return false, fmt.Errorf("%w: %v", errSPDYHeaders, err)
		}
		d.z = z
	}
	blockLeft := maxSPDYHeaderBlock
	read := func(n uint32) ([]byte, error) {
		if n > maxSPDYHeaderField || int(n) > blockLeft || int(n) > d.left {
			return nil, fmt.Errorf("%w: more than %d bytes in a field, %d in a block or %d in a session", errSPDYHeaders, maxSPDYHeaderField, maxSPDYHeaderBlock, maxSPDYSessionHeaders)
		}
		blockLeft -= int(n)
		d.left -= int(n)
		if _, err := io.ReadFull(d.z, d.buf[:n]); err != nil {
			return nil, fmt.Errorf("%w: %v", errSPDYHeaders, err)
		}
		return d.buf[:n], nil
	}
	length := func() (uint32, error) {
		b, err := read(4)
		if err != nil {
			return 0, err
		}
		return binary.BigEndian.Uint32(b), nil
	}
	count, err := length()
	if err != nil {
		return false, err
	}
	if count > maxSPDYHeaders {
		return false, fmt.Errorf("%w: %d headers in a block, more than %d", errSPDYHeaders, count, maxSPDYHeaders)
	}
	errorStream, seen := false, false
	for range count {
		n, err := length()
		if err != nil {
			return false, err
		}
		name, err := read(n)
		if err != nil {
			return false, err
		}
		isType := !seen && string(name) == "streamtype" // SPDY header names are lower case
		seen = seen || isType
		if n, err = length(); err != nil {
			return false, err
		}
		value, err := read(n)
		if err != nil {
			return false, err
		}
		if isType {
			first, _, _ := bytes.Cut(value, []byte{0}) // NUL separates the values of one header
			errorStream = string(first) == "error"
		}
	}
	if d.src.Len() > maxSPDYControlFrame {
		// Compressed bytes that no block reads pile up: a peer out of step with its own compression.
		return false, fmt.Errorf("%w: %d compressed bytes beyond the header blocks", errSPDYHeaders, d.src.Len())
	}
	return errorStream, nil
}

// close frees the inflater and its window.
func (d *spdyHeaderDecoder) close() {
	if d.z != nil {
		d.z.Close()
	}
	d.z, d.src = nil, bytes.Buffer{}
}

package streamframe

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Bounds on the SPDY header blocks warren inflates (the client's, on both the gateway and the connector).
// Kubernetes' stream headers (streamType, port, requestID) take under 100 bytes a block; past any bound the session
// is no longer followed, and goes on untouched. A header block is zlib-compressed, so its compressed size bounds
// nothing: 24 KB inflate to 24 MiB.
const (
	MaxSPDYHeaders     = 32      // name/value pairs in one block
	MaxSPDYHeaderField = 1 << 10 // bytes of one name or one value
	MaxSPDYHeaderBlock = 8 << 10 // inflated bytes of one block
	// MaxSPDYSessionHeaders bounds the inflated header bytes of a whole session: port-forward opens two streams
	// per forwarded connection (about 140 bytes of headers), so about 30,000 connections.
	MaxSPDYSessionHeaders = 4 << 20
)

// ErrSPDYHeaders is returned for a header block past a bound or unreadable: the shared compression context can no
// longer be trusted, so nothing later is decoded either.
var ErrSPDYHeaders = errors.New("SPDY header block not followed")

// SPDYHeaders inflates the header blocks one side of a SPDY/3 session sends. They share one zlib stream (with
// SPDYDictionary) across frames, each block ending at a sync flush, so every block must be inflated in order and
// read to its end for the next to decode.
//
// It reads a block exactly as far as its name/value pairs go, through one fixed buffer, and keeps only what warren
// needs (the stream's type): nothing is allocated per header, and the work per frame and per session is bounded by
// the inflated bytes it reads (MaxSPDYHeaderBlock, MaxSPDYSessionHeaders) plus the inflater's 32 KiB window.
// spdystream's own Framer, even with its header count and field size options, splits every value on NUL into a
// []string, so that a few KiB of compressed NULs still cost MiBs of allocation per frame (BenchmarkSPDYHeaderBomb in
// package gateway). Not safe for concurrent use.
type SPDYHeaders struct {
	src  bytes.Buffer  // compressed bytes the inflater has not consumed yet (a bytes.Buffer is a flate.Reader: no read-ahead)
	z    io.ReadCloser // nil before the first block
	left int           // inflated bytes the session may still read
	buf  [MaxSPDYHeaderField]byte
}

// NewSPDYHeaders returns a decoder for one direction of a session.
func NewSPDYHeaders() *SPDYHeaders { return &SPDYHeaders{left: MaxSPDYSessionHeaders} }

// StreamType inflates the header block of a whole control frame (as SPDYSplitter hands it over) and returns the
// first value of its streamtype header, as Kubernetes names each stream of an exec or port-forward session ("error",
// "stdout", "data"...; "" without one). Control frames without a header block (RST_STREAM, PING, SETTINGS, ...)
// give ok false and leave the decoder as it was. Any error is ErrSPDYHeaders wrapped with the reason; after one the
// decoder must not be used again.
func (d *SPDYHeaders) StreamType(frame []byte) (typ string, ok bool, err error) {
	// Where the compressed header block starts: after the frame header, the stream id and, for SYN_STREAM, the
	// associated stream id, priority and slot.
	var start int
	switch ControlType(frame) {
	case SPDYSynStream:
		start = 18
	case SPDYSynReply, SPDYHeadersFrame:
		start = 12
	default:
		return "", false, nil
	}
	if len(frame) < start {
		return "", true, fmt.Errorf("%w: a %d-byte control frame", ErrSPDYHeaders, len(frame))
	}
	typ, err = d.streamType(frame[start:])
	return typ, true, err
}

func (d *SPDYHeaders) streamType(block []byte) (string, error) {
	d.src.Write(block)
	if d.z == nil {
		z, err := zlib.NewReaderDict(&d.src, []byte(SPDYDictionary))
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrSPDYHeaders, err)
		}
		d.z = z
	}
	blockLeft := MaxSPDYHeaderBlock
	read := func(n uint32) ([]byte, error) {
		if n > MaxSPDYHeaderField || int(n) > blockLeft || int(n) > d.left {
			return nil, fmt.Errorf("%w: more than %d bytes in a field, %d in a block or %d in a session", ErrSPDYHeaders, MaxSPDYHeaderField, MaxSPDYHeaderBlock, MaxSPDYSessionHeaders)
		}
		blockLeft -= int(n)
		d.left -= int(n)
		if _, err := io.ReadFull(d.z, d.buf[:n]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSPDYHeaders, err)
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
		return "", err
	}
	if count > MaxSPDYHeaders {
		return "", fmt.Errorf("%w: %d headers in a block, more than %d", ErrSPDYHeaders, count, MaxSPDYHeaders)
	}
	typ, seen := "", false
	for range count {
		n, err := length()
		if err != nil {
			return "", err
		}
		name, err := read(n)
		if err != nil {
			return "", err
		}
		isType := !seen && string(name) == "streamtype" // SPDY header names are lower case
		seen = seen || isType
		if n, err = length(); err != nil {
			return "", err
		}
		value, err := read(n)
		if err != nil {
			return "", err
		}
		if isType {
			first, _, _ := bytes.Cut(value, []byte{0}) // NUL separates the values of one header
			typ = string(first)
		}
	}
	if d.src.Len() > MaxSPDYControlFrame {
		// Compressed bytes that no block reads pile up: a peer out of step with its own compression.
		return "", fmt.Errorf("%w: %d compressed bytes beyond the header blocks", ErrSPDYHeaders, d.src.Len())
	}
	return typ, nil
}

// Close frees the inflater and its window.
func (d *SPDYHeaders) Close() {
	if d.z != nil {
		d.z.Close()
	}
	d.z, d.src = nil, bytes.Buffer{}
}

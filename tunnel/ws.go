package tunnel

// The WebSocket layer (RFC 6455), written for this one use: a byte stream for yamux in binary frames, both ends
// warren (or any compliant peer: message boundaries carry no meaning here, so fragmented or re-framed messages read
// the same). Why not a general WebSocket library: the connector is the WebSocket client, so the heavy direction
// (responses) is masked, and the library we started with masked through a 4 KiB buffer, one TLS record and one
// write syscall per 4 KiB; yamux writes each frame's 12-byte header and its body separately, which a library turns
// into two messages. Here a yamux data frame (header and body) goes out as one WebSocket frame, masked in 64 KiB
// chunks, and an idle connection holds no buffer and no goroutine of its own.

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxControlPayload = 125
	// chunkSize is how much of a frame is masked (client) or gathered (header and body, server) per write: four
	// full TLS records.
	chunkSize = 64 << 10
	// smallFrame bounds the frames built in the connection's own fixed array (control frames, window updates,
	// small data frames), so that they take no pooled buffer.
	smallFrame = 256

	// yamux's frame header (spec.md): version, type, flags, stream id, length. Only data frames (type 0) are
	// followed by a body, of the header's length.
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

var (
	errProtocol     = errors.New("websocket protocol error")
	errWriteTimeout = errors.New("tunnel write timed out: the peer stopped reading")
	errConnClosed   = fmt.Errorf("websocket closed: %w", net.ErrClosed)
)

// chunkPool holds the buffers of large writes; an idle connection keeps none.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize+14); return &b }}

// wsConn is a WebSocket connection seen as a net.Conn carrying a byte stream. Read is for one goroutine at a time
// (yamux's receive loop); Write, ping and pong may be called concurrently and are serialized.
type wsConn struct {
	rwc     io.ReadWriteCloser
	r       io.Reader // rwc, after bytes the handshake had already buffered
	local   net.Addr
	remote  net.Addr
	client  bool      // a client masks what it sends and reads unmasked frames; a server the reverse
	cork    *corkConn // under the client's TLS: gathers a frame's records into one write; nil on the server
	timeout time.Duration

	// Read side, owned by the reader.
	rhdr      [14]byte
	remaining uint64 // payload bytes left in the current data frame
	rmasked   bool
	rkey      [4]byte
	rkeyPos   int
	ctrl      [maxControlPayload]byte

	// Write side, under wmu.
	wmu      sync.Mutex
	werr     error // sticky: a failed or timed-out write leaves the stream unusable
	small    [smallFrame]byte
	wtimer   *time.Timer // closes the connection when a write takes longer than timeout
	timedOut atomic.Bool

	// pending is a yamux data header whose body is the next Write: the two go out as one frame. Owned by the
	// goroutine that calls Write (yamux's send loop).
	pending    [yamuxHeaderSize]byte
	hasPending bool

	onPong    func()
	closeOnce sync.Once
	onClose   func()
}

func newWSConn(rwc io.ReadWriteCloser, buffered []byte, client bool, local, remote net.Addr, timeout time.Duration) *wsConn {
	c := &wsConn{rwc: rwc, r: rwc, client: client, local: local, remote: remote, timeout: timeout}
	if len(buffered) > 0 {
		c.r = io.MultiReader(&onceReader{b: buffered}, rwc)
	}
	if c.local == nil {
		c.local = tunnelAddr("local")
	}
	if c.remote == nil {
		c.remote = tunnelAddr("remote")
	}
	c.wtimer = time.AfterFunc(time.Hour, func() {
		c.timedOut.Store(true)
		c.Close()
	})
	c.wtimer.Stop()
	return c
}

// onceReader yields bytes once and then lets go of them.
type onceReader struct{ b []byte }

func (o *onceReader) Read(p []byte) (int, error) {
	if len(o.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, o.b)
	o.b = o.b[n:]
	if len(o.b) == 0 {
		o.b = nil
	}
	return n, nil
}

// Read returns payload bytes of data frames, answering pings and noting pongs on the way.
func (c *wsConn) Read(p []byte) (int, error) {
	for c.remaining == 0 {
		if err := c.nextFrame(); err != nil {
			return 0, err
		}
	}
	if uint64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.r.Read(p)
	if c.rmasked {
		c.rkeyPos = mask(c.rkey, c.rkeyPos, p[:n])
	}
	c.remaining -= uint64(n)
	if err == io.EOF && c.remaining > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// nextFrame reads frame headers until a data frame with a payload begins; control frames are handled here.
func (c *wsConn) nextFrame() error {
	h := c.rhdr[:]
	if _, err := io.ReadFull(c.r, h[:2]); err != nil {
		return err
	}
	fin, rsv, op := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0f
	masked, n := h[1]&0x80 != 0, uint64(h[1]&0x7f)
	if rsv != 0 {
		return fmt.Errorf("%w: reserved bits set (no extension was negotiated)", errProtocol)
	}
	if masked == c.client {
		return fmt.Errorf("%w: frame masking is wrong for this side", errProtocol)
	}
	switch n {
	case 126:
		if _, err := io.ReadFull(c.r, h[2:4]); err != nil {
			return err
		}
		n = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		if _, err := io.ReadFull(c.r, h[2:10]); err != nil {
			return err
		}
		n = binary.BigEndian.Uint64(h[2:10])
		if n>>63 != 0 {
			return fmt.Errorf("%w: frame length overflows", errProtocol)
		}
	}
	c.rmasked, c.rkeyPos = masked, 0
	if masked {
		if _, err := io.ReadFull(c.r, c.rkey[:]); err != nil {
			return err
		}
	}
	switch op {
	case opBinary, opContinuation:
		c.remaining = n
		return nil
	case opPing, opPong, opClose:
		if n > maxControlPayload || !fin {
			return fmt.Errorf("%w: control frame too long or fragmented", errProtocol)
		}
		payload := c.ctrl[:n]
		if _, err := io.ReadFull(c.r, payload); err != nil {
			return err
		}
		if masked {
			mask(c.rkey, 0, payload)
		}
		switch op {
		case opPing:
			return c.writeFrame(opPong, payload, nil)
		case opPong:
			if c.onPong != nil {
				c.onPong()
			}
			return nil
		default:
			// The peer is leaving: answer as the protocol asks, and end the stream.
			c.writeFrame(opClose, payload[:min(len(payload), 2)], nil)
			return io.EOF
		}
	default:
		return fmt.Errorf("%w: unexpected opcode %d (the tunnel carries binary frames only)", errProtocol, op)
	}
}

// Write sends p as the payload of binary frames. A yamux data header is held back and sent in one frame with the
// body that follows it.
func (c *wsConn) Write(p []byte) (int, error) {
	if c.hasPending {
		c.hasPending = false
		var err error
		if binary.BigEndian.Uint32(c.pending[8:12]) == uint32(len(p)) {
			err = c.writeFrame(opBinary, c.pending[:], p)
		} else if err = c.writeFrame(opBinary, c.pending[:], nil); err == nil {
			err = c.writeFrame(opBinary, p, nil) // not the body announced: send both as they are
		}
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		copy(c.pending[:], p)
		c.hasPending = true
		return len(p), nil
	}
	if err := c.writeFrame(opBinary, p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame sends one frame whose payload is a followed by b, under the write deadline.
func (c *wsConn) writeFrame(op byte, a, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	c.wtimer.Reset(c.timeout)
	if c.cork != nil {
		c.cork.cork()
	}
	err := c.writeFrameLocked(op, a, b)
	if c.cork != nil {
		if uerr := c.cork.uncork(); err == nil {
			err = uerr
		}
	}
	c.wtimer.Stop()
	if c.timedOut.Load() {
		err = errWriteTimeout
	}
	if err != nil {
		c.werr = err
	}
	return err
}

func (c *wsConn) writeFrameLocked(op byte, a, b []byte) error {
	total := len(a) + len(b)
	var hdr [14]byte
	hdr[0] = 0x80 | op
	n := 2
	switch {
	case total <= 125:
		hdr[1] = byte(total)
	case total <= 0xffff:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(total))
		n = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(total))
		n = 10
	}
	var key [4]byte
	if c.client {
		hdr[1] |= 0x80
		if _, err := rand.Read(key[:]); err != nil {
			return err
		}
		copy(hdr[n:], key[:])
		n += 4
	}
	// Gather header and payload into as few writes as possible: one for a frame up to chunkSize.
	var buf []byte
	if n+total <= smallFrame {
		buf = c.small[:]
	} else {
		bp := chunkPool.Get().(*[]byte)
		defer chunkPool.Put(bp)
		buf = *bp
	}
	m := copy(buf, hdr[:n])
	pos := 0
	for _, part := range [2][]byte{a, b} {
		for len(part) > 0 {
			if m == len(buf) {
				if _, err := c.rwc.Write(buf[:m]); err != nil {
					return err
				}
				m = 0
			}
			if !c.client && m == 0 && len(part) >= len(buf) {
				// Unmasked and large: write straight from the caller's bytes rather than copy them.
				if _, err := c.rwc.Write(part); err != nil {
					return err
				}
				break
			}
			k := copy(buf[m:], part)
			if c.client {
				pos = mask(key, pos, buf[m:m+k])
			}
			m += k
			part = part[k:]
		}
	}
	if m > 0 {
		if _, err := c.rwc.Write(buf[:m]); err != nil {
			return err
		}
	}
	return nil
}

// mask XORs b with the masking key, starting at key position pos; it returns the position after b.
func mask(key [4]byte, pos int, b []byte) int {
	if len(b) >= 16 {
		// Eight bytes at a time: as 8 is a multiple of 4, the position is the same after each word.
		var kb [8]byte
		for i := range kb {
			kb[i] = key[(pos+i)&3]
		}
		k := binary.LittleEndian.Uint64(kb[:])
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[pos&3]
		pos++
	}
	return pos & 3
}

// ping sends a WebSocket ping; the pong arrives through onPong.
func (c *wsConn) ping() error { return c.writeFrame(opPing, nil, nil) }

// Close drops the connection at once: yamux has already told the peer what it needed to, and a closing handshake
// would hold the caller when the peer is gone.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		c.wtimer.Stop()
		if c.cork != nil {
			// Close the TCP connection first: a write blocked under the cork fails at once, and TLS does not wait
			// to send its close alert behind it.
			c.cork.Conn.Close()
		}
		c.rwc.Close()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

func (c *wsConn) LocalAddr() net.Addr                { return c.local }
func (c *wsConn) RemoteAddr() net.Addr               { return c.remote }
func (c *wsConn) SetDeadline(t time.Time) error      { return nil }
func (c *wsConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return nil }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "warren-tunnel" }
func (a tunnelAddr) String() string  { return string(a) }

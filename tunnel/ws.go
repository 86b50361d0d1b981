package tunnel

// The WebSocket layer (RFC 6455), written for this one use: a byte stream for yamux in binary frames, both ends
// warren (or any compliant peer: message boundaries carry no meaning here, so fragmented or re-framed messages read
// the same). Why not a general WebSocket library: the connector is the WebSocket client, so the heavy direction
// (responses) is masked, and the library we started with masked through a 4 KiB buffer, one TLS record and one
// write syscall per 4 KiB; yamux writes each frame's 12-byte header and its body separately, which a library turns
// into two messages. Here a yamux data frame (header and body) goes out as one WebSocket frame, masked in 64 KiB
// chunks, and an idle connection holds no buffer and no goroutine of its own.
//
// It is strict where RFC 6455 says "MUST": a peer that breaks the framing (reserved bits or opcodes, wrong masking,
// a continuation with nothing to continue, a new message inside a fragmented one, a long or fragmented control
// frame, a malformed Close) fails the connection with a Close of 1002 and the reason; a text message, which the
// tunnel never carries, with 1003. spec.md has the whole wire contract; ws_autobahn_test.go the cases of the
// Autobahn suite that apply.

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/warren-dev/warren/internal/wsframe"
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

	// closeFrameTimeout bounds what Close spends on its Close frame (waiting for a write in progress, then its
	// own): a peer that stopped reading gets no more of it, and the caller is not held for the write timeout.
	closeFrameTimeout = time.Second

	// yamux's frame header (spec.md): version, type, flags, stream id, length. Only data frames (type 0) are
	// followed by a body, of the header's length.
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// Close status codes (RFC 6455 7.4.1).
const (
	closeNormal          = 1000
	closeProtocolError   = 1002
	closeUnsupportedData = 1003
	// closeNoStatus is never sent: it stands for a Close frame without a payload, answered with an empty one.
	closeNoStatus = 1005
)

var (
	errProtocol        = errors.New("websocket protocol error")
	errWriteTimeout    = errors.New("tunnel write timed out: the peer stopped reading")
	errConnClosed      = fmt.Errorf("websocket closed: %w", net.ErrClosed)
	errConcurrentWrite = errors.New("tunnel: concurrent Write on the WebSocket connection (it has one writer, yamux's send loop)")
)

// chunkPool holds the buffers of large writes; an idle connection keeps none.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize+14); return &b }}

// wsConn is a WebSocket connection carrying one byte stream: the io.ReadWriteCloser yamux runs on, with the
// addresses yamux reports (LocalAddr, RemoteAddr).
//
// Concurrency: Read has one caller at a time (yamux's receive loop), and so has Write (yamux's send loop, its only
// caller: the header held back in pending relies on it, and a concurrent Write fails with errConcurrentWrite rather
// than split a header from its body). ping and Close may be called from any goroutine. Every frame is written under
// wmu. The reader never writes: the pong it owes goes out from a short-lived goroutine (pongLoop) and its Close
// answer from Close, so a peer that stops reading can never stall the reading of what it sends (two readers each
// blocked writing a pong to the other would deadlock once both send buffers are full).
//
// It is not a net.Conn and has no deadlines: yamux needs none (its streams have their own), every write is bounded
// by timeout instead, and Close by closeFrameTimeout.
type wsConn struct {
	rwc     io.ReadWriteCloser
	r       io.Reader // rwc, after bytes the handshake had already buffered
	local   net.Addr
	remote  net.Addr
	client  bool      // a client masks what it sends and reads unmasked frames; a server the reverse
	cork    *corkConn // under the client's TLS: gathers a frame's records into one write; nil on the server
	timeout time.Duration

	// Read side, owned by the reader.
	rhdr       [wsframe.MaxHeaderLen]byte
	remaining  uint64 // payload bytes left in the current data frame
	rmasked    bool
	rkey       [4]byte
	rkeyPos    int
	fragmented bool  // a message has begun and not ended: only its continuations (and control frames) may come
	rerr       error // sticky: after the peer's Close, a protocol error or a failed read nothing more is read
	ctrl       [maxControlPayload]byte

	// Write side, under wmu: a channel of one token rather than a mutex, so that a writer waiting for it is durably
	// blocked to testing/synctest, which drives the timers that bound a stuck write.
	wmu      chan struct{}
	werr     error // sticky: a failed or timed-out write, or Close, leaves the stream unusable
	small    [smallFrame]byte
	wtimer   *time.Timer // closes the connection when a write takes longer than timeout
	timedOut atomic.Bool
	// closing is set once the peer's Close arrived, the reader failed the connection, or Close began: from then on
	// no data or ping goes out, only the pongs owed and Close's own frame (RFC 6455 5.5.1: no data after a Close).
	closing atomic.Bool

	// pending is a yamux data header whose body is the next Write: the two go out as one frame. Owned by the
	// goroutine that calls Write (yamux's send loop); writing guards that there is only one.
	pending    [yamuxHeaderSize]byte
	hasPending bool
	writing    atomic.Bool

	// What the reader leaves for others to send, under ctlMu (taken after wmu when both are held).
	ctlMu       sync.Mutex
	pong        [maxControlPayload]byte // payload of the latest ping not yet answered (RFC 6455 5.5.3)
	pongLen     int
	pongDue     bool
	ponging     bool           // a pongLoop runs
	ctlClosed   bool           // Close is waiting for pongLoop: none may start
	pongers     sync.WaitGroup // the running pongLoop, waited for by Close
	closeCode   uint16         // what Close sends: 0 for 1000, the peer's code echoed, or why the reader failed
	closeReason string

	onPong         func()
	closeOnce      sync.Once
	transportClose sync.Once
	onClose        func()
}

func newWSConn(rwc io.ReadWriteCloser, buffered []byte, client bool, local, remote net.Addr, timeout time.Duration) *wsConn {
	c := &wsConn{rwc: rwc, r: rwc, client: client, local: local, remote: remote, timeout: timeout, wmu: make(chan struct{}, 1)}
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
		c.closeTransport() // fails the write that is stuck, so that Close need not wait for it
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

// Read returns payload bytes of data frames, handing pings' answers over and noting pongs on the way. It returns
// io.EOF once the peer sent a normal Close (1000, 1001 or none), and an error for any other.
func (c *wsConn) Read(p []byte) (int, error) {
	for c.remaining == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.nextFrame(); err != nil {
			c.rerr = err
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
	// The reserved bits and the masking are refused before the rest of the header is read.
	if h[0]&0x70 != 0 {
		return c.fail(closeProtocolError, "reserved bits set (no extension was negotiated)")
	}
	if masked := h[1]&0x80 != 0; masked == c.client {
		if c.client {
			return c.fail(closeProtocolError, "masked frame from the server")
		}
		return c.fail(closeProtocolError, "unmasked frame from the client")
	}
	if _, err := io.ReadFull(c.r, h[2:wsframe.HeaderLen(h[1])]); err != nil {
		return err
	}
	hd := wsframe.Parse(h)
	if hd.Length>>63 != 0 {
		return c.fail(closeProtocolError, "frame length overflows")
	}
	fin, op, n, masked := hd.Fin, hd.Opcode, hd.Length, hd.Masked
	c.rmasked, c.rkey, c.rkeyPos = masked, hd.Mask, 0
	switch op {
	case opBinary, opText:
		if c.fragmented {
			return c.fail(closeProtocolError, "a new message began inside a fragmented one")
		}
		if op == opText {
			return c.fail(closeUnsupportedData, "text message: the tunnel carries binary messages only")
		}
		c.fragmented, c.remaining = !fin, n
		return nil
	case opContinuation:
		if !c.fragmented {
			return c.fail(closeProtocolError, "continuation frame with no message to continue")
		}
		c.fragmented, c.remaining = !fin, n
		return nil
	case opPing, opPong, opClose:
		if !fin {
			return c.fail(closeProtocolError, "fragmented control frame")
		}
		if n > maxControlPayload {
			return c.fail(closeProtocolError, "control frame longer than 125 bytes")
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
			c.owePong(payload)
		case opPong:
			if c.onPong != nil {
				c.onPong()
			}
		default:
			return c.peerClosed(payload)
		}
		return nil
	default:
		return c.fail(closeProtocolError, "reserved opcode "+strconv.Itoa(int(op)))
	}
}

// fail fails the connection (RFC 6455 7.1.7): nothing more is read or sent but a Close with code and reason, which
// Close sends (yamux closes the connection as soon as Read fails).
func (c *wsConn) fail(code uint16, reason string) error {
	c.decideClose(code, reason)
	return fmt.Errorf("%w: %s", errProtocol, reason)
}

// peerClosed takes the peer's Close: Close echoes its code; a malformed one fails the connection instead.
func (c *wsConn) peerClosed(payload []byte) error {
	if len(payload) == 0 {
		c.decideClose(closeNoStatus, "")
		return io.EOF
	}
	if len(payload) == 1 {
		return c.fail(closeProtocolError, "close frame with a 1-byte payload")
	}
	code, reason := binary.BigEndian.Uint16(payload), payload[2:]
	if !validCloseCode(code) {
		return c.fail(closeProtocolError, "invalid close code "+strconv.Itoa(int(code)))
	}
	if !utf8.Valid(reason) {
		return c.fail(closeProtocolError, "close reason is not UTF-8")
	}
	c.decideClose(code, "")
	if code == closeNormal || code == 1001 {
		return io.EOF
	}
	return fmt.Errorf("websocket closed by the peer: %d %q", code, reason)
}

// validCloseCode reports whether a peer may send code (RFC 6455 7.4 and IANA's registry): 1000-1003 and 1007-1014
// are defined, 3000-4999 belong to libraries and applications; 1004-1006 and 1015 must never be sent, the rest of
// 0-2999 is unassigned, and 5000 and above undefined.
func validCloseCode(code uint16) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

// decideClose sets the Close frame Close will send, unless one was decided already, and stops data going out.
func (c *wsConn) decideClose(code uint16, reason string) {
	c.ctlMu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
	}
	c.ctlMu.Unlock()
	c.closing.Store(true)
}

// owePong leaves the answer to a ping for pongLoop, starting it unless it runs. Only the latest ping is owed an
// answer (RFC 6455 5.5.3), so a peer's pings take one slot however many it sends.
func (c *wsConn) owePong(payload []byte) {
	c.ctlMu.Lock()
	defer c.ctlMu.Unlock()
	if c.ctlClosed {
		return
	}
	c.pongLen = copy(c.pong[:], payload)
	c.pongDue = true
	if !c.ponging {
		c.ponging = true
		c.pongers.Add(1)
		go c.pongLoop()
	}
}

// pongLoop sends the pongs owed until none is; Close waits for it.
func (c *wsConn) pongLoop() {
	defer c.pongers.Done()
	var payload [maxControlPayload]byte
	for {
		c.lockWrites()
		c.ctlMu.Lock()
		if !c.pongDue {
			c.ponging = false
			c.ctlMu.Unlock()
			c.unlockWrites()
			return
		}
		n := copy(payload[:], c.pong[:c.pongLen])
		c.pongDue = false
		c.ctlMu.Unlock()
		c.writeLocked(opPong, payload[:n], nil) // a failure is sticky in werr: the next writer reports it
		c.unlockWrites()
	}
}

// Write sends p as the payload of binary frames. A yamux data header is held back and sent in one frame with the
// body that follows it. It has one caller at a time (see wsConn).
func (c *wsConn) Write(p []byte) (int, error) {
	if !c.writing.CompareAndSwap(false, true) {
		return 0, errConcurrentWrite
	}
	defer c.writing.Store(false)
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
		if c.closing.Load() {
			return 0, errConnClosed
		}
		copy(c.pending[:], p)
		c.hasPending = true
		return len(p), nil
	}
	if err := c.writeFrame(opBinary, p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) lockWrites()   { c.wmu <- struct{}{} }
func (c *wsConn) unlockWrites() { <-c.wmu }

// writeFrame sends one frame whose payload is a followed by b, under the write deadline.
func (c *wsConn) writeFrame(op byte, a, b []byte) error {
	c.lockWrites()
	defer c.unlockWrites()
	return c.writeLocked(op, a, b)
}

// writeLocked is writeFrame with wmu held. Once closing is set only the pongs owed may still go out (until Close
// sends its own frame, which sets werr).
func (c *wsConn) writeLocked(op byte, a, b []byte) error {
	if c.werr != nil {
		return c.werr
	}
	if c.closing.Load() && op != opPong {
		return errConnClosed
	}
	c.wtimer.Reset(c.timeout)
	err := c.send(op, a, b)
	c.wtimer.Stop()
	if c.timedOut.Load() {
		err = errWriteTimeout
	}
	if err != nil {
		c.werr = err
	}
	return err
}

// send writes one frame, corked (the client under TLS) so that its TLS records leave in one write.
func (c *wsConn) send(op byte, a, b []byte) error {
	if c.cork != nil {
		c.cork.cork()
	}
	err := c.writeFrameLocked(op, a, b)
	if c.cork != nil {
		if uerr := c.cork.uncork(); err == nil {
			err = uerr
		}
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

// Close sends a Close frame and drops the connection without waiting for the peer's answer: yamux has already told
// the peer what it needed to, and a closing handshake would hold the caller when the peer is gone. The frame says
// 1000, echoes the peer's Close, or gives the reason the reader failed the connection; a pong still owed goes first.
// The frame is given up when it cannot go out within closeFrameTimeout. Close is idempotent.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true) // no Write or ping starts from now on
		// A write stuck on a peer that stopped reading (or this Close's own) fails when the bound is up.
		force := time.AfterFunc(closeFrameTimeout, c.closeTransport)
		c.lockWrites()
		if c.werr == nil {
			c.ctlMu.Lock()
			pong, code, reason := append([]byte(nil), c.pong[:c.pongLen]...), c.closeCode, c.closeReason
			owed := c.pongDue
			c.pongDue = false
			c.ctlMu.Unlock()
			err := error(nil)
			if owed {
				err = c.send(opPong, pong, nil)
			}
			if err == nil {
				var buf [maxControlPayload]byte
				c.send(opClose, closePayload(buf[:0], code, reason), nil)
			}
			c.werr = errConnClosed
		}
		c.unlockWrites()
		force.Stop()
		c.wtimer.Stop()
		c.closeTransport()
		c.ctlMu.Lock()
		c.ctlClosed = true
		c.ctlMu.Unlock()
		c.pongers.Wait()
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// closePayload appends the payload of a Close frame with code and reason to b: none for closeNoStatus, and 1000
// for code 0. reason is cut to fit in a control frame.
func closePayload(b []byte, code uint16, reason string) []byte {
	switch code {
	case closeNoStatus:
		return b
	case 0:
		code = closeNormal
	}
	b = binary.BigEndian.AppendUint16(b, code)
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return append(b, reason...)
}

// closeTransport closes the connection under the WebSocket, once.
func (c *wsConn) closeTransport() {
	c.transportClose.Do(func() {
		if c.cork != nil {
			// Close the TCP connection first: a write blocked under the cork fails at once, and TLS does not wait
			// to send its close alert behind it.
			c.cork.Conn.Close()
		}
		c.rwc.Close()
	})
}

func (c *wsConn) LocalAddr() net.Addr  { return c.local }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "warren-tunnel" }
func (a tunnelAddr) String() string  { return string(a) }

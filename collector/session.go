package collector

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// A collector the container runtime starts itself (the ephemeral and node modes: the collector is the container's
// entrypoint, no shell, nothing uploaded) is reached over pods/attach. Two things make that safe:
//
//   - It writes nothing before the acquirer is attached: it waits on its stdin for the session line (HandshakeMagic,
//     a version and a fresh 256-bit key), so no byte of the stream is written before anyone reads it (an attach
//     made after the process started misses what it wrote before).
//   - Its stdout also lands in the node's container log (/var/log/pods/..., read by `kubectl logs` with pods/log,
//     rotated by the kubelet and often shipped off the node by a log agent): evidence there would outlive the
//     acquisition and reach people the examiner never chose. So the stream is sealed with the session key
//     (AES-256-GCM, below); the key travels only on stdin, which no runtime logs. The log holds ciphertext, and a
//     stream read back from it cannot be opened, nor could a replayed one: the key is new for every session.
//
// The session line is "WARREN-COLLECTOR 1 <64 hex digits>\n". The sealed stream is SealMagic, then frames: a 4-byte
// big-endian length L (at most sealedFrameMax), then L bytes of AES-256-GCM output for one chunk of at most
// sealChunk plaintext bytes. The 12-byte nonce is the frame's number (8 bytes, big-endian) after 3 zero bytes,
// and a last byte 1 on the final frame (0 otherwise), so frames cannot be reordered, dropped or the stream cut
// without the opener noticing; nothing may follow the final frame.
const (
	HandshakeMagic = "WARREN-COLLECTOR"
	// HandshakeVersion is the session protocol's version.
	HandshakeVersion = "1"
	// SealMagic starts a sealed stream.
	SealMagic = "WARREN-SEALED-1\n"

	sealChunk      = 64 << 10
	sealedFrameMax = sealChunk + 16
	// maxHandshakeLine bounds the session line the collector reads.
	maxHandshakeLine = 256
	sessionKeyBytes  = 32
)

// ErrSealed is matched by every failure to open a sealed stream: a wrong key, a changed, reordered, dropped or
// cut frame, or data after the final frame.
var ErrSealed = errors.New("the collector's sealed stream does not open")

// NewSessionKey returns a fresh session key.
func NewSessionKey() []byte {
	k := make([]byte, sessionKeyBytes)
	if _, err := rand.Read(k); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never on Linux since 3.17
	}
	return k
}

// HandshakeLine is what the acquirer writes to the collector's stdin to start a session with key.
func HandshakeLine(key []byte) string {
	return HandshakeMagic + " " + HandshakeVersion + " " + hex.EncodeToString(key) + "\n"
}

// readHandshake reads the session line from r (at most maxHandshakeLine bytes, byte by byte so that nothing
// after it is consumed) and returns the key.
func readHandshake(r io.Reader) ([]byte, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxHandshakeLine {
		n, err := r.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return parseHandshake(string(line))
			}
			line = append(line, b[0])
			continue
		}
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("the session line is longer than %d bytes", maxHandshakeLine)
}

func parseHandshake(line string) ([]byte, error) {
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != HandshakeMagic {
		return nil, errors.New("stdin does not start with a warren session line")
	}
	if f[1] != HandshakeVersion {
		return nil, fmt.Errorf("session protocol version %q; this collector speaks %s", EscapeName(f[1]), HandshakeVersion)
	}
	key, err := hex.DecodeString(f[2])
	if err != nil || len(key) != sessionKeyBytes {
		return nil, fmt.Errorf("the session key is not %d hex-encoded bytes", sessionKeyBytes)
	}
	return key, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != sessionKeyBytes {
		return nil, fmt.Errorf("session key of %d bytes, want %d", len(key), sessionKeyBytes)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealNonce(n uint64, final bool) []byte {
	nonce := make([]byte, 12)
	binary.BigEndian.PutUint64(nonce[3:11], n)
	if final {
		nonce[11] = 1
	}
	return nonce
}

// sealWriter seals what is written to it into w, in frames of sealChunk bytes; Close writes the final frame. Owned by
// one goroutine.
type sealWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	buf    []byte
	n      uint64
	closed bool
	err    error
}

func newSealWriter(w io.Writer, key []byte) (*sealWriter, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, SealMagic); err != nil {
		return nil, err
	}
	return &sealWriter{w: w, aead: aead, buf: make([]byte, 0, sealChunk)}, nil
}

func (s *sealWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.closed {
		return 0, errors.New("write after close")
	}
	written := 0
	for len(p) > 0 {
		room := sealChunk - len(s.buf)
		c := min(room, len(p))
		s.buf = append(s.buf, p[:c]...)
		p, written = p[c:], written+c
		if len(s.buf) == sealChunk {
			if s.err = s.frame(false); s.err != nil {
				return written, s.err
			}
		}
	}
	return written, nil
}

func (s *sealWriter) frame(final bool) error {
	out := make([]byte, 4, 4+len(s.buf)+s.aead.Overhead())
	out = s.aead.Seal(out, sealNonce(s.n, final), s.buf, nil)
	binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
	s.n++
	s.buf = s.buf[:0]
	_, err := s.w.Write(out)
	return err
}

// Close writes what is buffered as the final frame.
func (s *sealWriter) Close() error {
	if s.err != nil || s.closed {
		return s.err
	}
	s.closed = true
	s.err = s.frame(true)
	return s.err
}

// openReader opens a sealed stream read from r. Its errors match ErrSealed.
type openReader struct {
	r     *bufio.Reader
	aead  cipher.AEAD
	plain []byte // what is left of the last frame opened
	n     uint64
	done  bool // the final frame was opened
	err   error
	frame []byte // the frame being opened
	out   []byte // its plaintext: apart from frame, which a failed Open may overwrite
}

func newOpenReader(r io.Reader, key []byte) (*openReader, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	return &openReader{r: bufio.NewReaderSize(r, 64<<10), aead: aead, frame: make([]byte, sealedFrameMax),
		out: make([]byte, sealChunk)}, nil
}

func (o *openReader) fail(format string, args ...any) error {
	o.err = fmt.Errorf("%w: %s", ErrSealed, fmt.Sprintf(format, args...))
	return o.err
}

func (o *openReader) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			// Nothing may follow the final frame.
			if _, err := o.r.ReadByte(); err != io.EOF {
				if err != nil {
					return 0, o.fail("after the final frame: %v", err)
				}
				return 0, o.fail("data after the final frame")
			}
			o.err = io.EOF
			return 0, io.EOF
		}
		if o.n == 0 {
			magic := make([]byte, len(SealMagic))
			if _, err := io.ReadFull(o.r, magic); err != nil {
				return 0, o.fail("the stream ended before its start marker (%v): the collector wrote nothing sealed", err)
			}
			if string(magic) != SealMagic {
				return 0, o.fail("the stream does not start with %q", strings.TrimSpace(SealMagic))
			}
		}
		var hdr [4]byte
		if _, err := io.ReadFull(o.r, hdr[:]); err != nil {
			if err == io.EOF {
				return 0, o.fail("the stream ended after %d frames, before its final frame: it was cut", o.n)
			}
			return 0, o.fail("frame %d: %v", o.n, err)
		}
		l := binary.BigEndian.Uint32(hdr[:])
		if l < uint32(o.aead.Overhead()) || l > sealedFrameMax {
			return 0, o.fail("frame %d of %d bytes (at most %d)", o.n, l, sealedFrameMax)
		}
		buf := o.frame[:l]
		if _, err := io.ReadFull(o.r, buf); err != nil {
			return 0, o.fail("frame %d cut short: %v", o.n, err)
		}
		plain, err := o.aead.Open(o.out[:0], sealNonce(o.n, false), buf, nil)
		if err != nil {
			plain, err = o.aead.Open(o.out[:0], sealNonce(o.n, true), buf, nil)
			if err != nil {
				return 0, o.fail("frame %d does not authenticate (wrong key, or changed, reordered or dropped frames)", o.n)
			}
			o.done = true
		}
		o.plain = plain
		o.n++
	}
	c := copy(p, o.plain)
	o.plain = o.plain[c:]
	return c, nil
}

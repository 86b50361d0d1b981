// Package wsframe decodes a WebSocket frame header (RFC 6455 5.2), the one decoder of them in warren: the tunnel's
// own WebSocket (package tunnel) reads frames with it, and package streamframe follows the frames of the sessions
// the gateway and the connector proxy. Each caller checks what its side requires (masking, reserved bits, lengths).
package wsframe

import "encoding/binary"

// MaxHeaderLen is the longest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask key.
const MaxHeaderLen = 14

// Header is a decoded frame header.
type Header struct {
	Fin    bool
	RSV    byte // the three reserved bits, in place (0x70)
	Opcode byte
	Masked bool
	Length uint64 // may have its top bit set, which RFC 6455 forbids: the caller decides
	Mask   [4]byte
}

// HeaderLen is the length of the header whose second byte is b1: 2, and 2 or 8 more for an extended length, and 4
// more for a mask key.
func HeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// Parse decodes h, a whole header: at least HeaderLen(h[1]) bytes.
func Parse(h []byte) Header {
	hd := Header{Fin: h[0]&0x80 != 0, RSV: h[0] & 0x70, Opcode: h[0] & 0x0f, Masked: h[1]&0x80 != 0}
	next := 2
	switch n := h[1] & 0x7f; n {
	case 126:
		hd.Length, next = uint64(binary.BigEndian.Uint16(h[2:4])), 4
	case 127:
		hd.Length, next = binary.BigEndian.Uint64(h[2:10]), 10
	default:
		hd.Length = uint64(n)
	}
	if hd.Masked {
		copy(hd.Mask[:], h[next:next+4])
	}
	return hd
}

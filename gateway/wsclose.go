package gateway

import "encoding/binary"

// wsFraming follows the WebSocket frames the server sends to the client (RFC 6455 5.2); the client's frames do not
// matter for a closing frame.
type wsFraming struct {
	hdr       [14]byte
	hdrLen    int    // bytes of the current frame header seen so far
	remaining uint64 // payload bytes of the current frame still to come
	sawClose  bool   // the server sent a closing frame
}

func (f *wsFraming) fromClient([]byte) {}

func (f *wsFraming) fromServer(p []byte) {
	for len(p) > 0 {
		if f.remaining > 0 {
			n := uint64(len(p))
			if n > f.remaining {
				n = f.remaining
			}
			f.remaining -= n
			p = p[n:]
			continue
		}
		f.hdr[f.hdrLen] = p[0]
		f.hdrLen++
		p = p[1:]
		if f.hdrLen < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4
		}
		if f.hdrLen < need {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.remaining = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.remaining = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			f.remaining = uint64(n)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.sawClose = true
		}
		f.hdrLen = 0
	}
}

// farewell is a closing frame with the code and reason (a control frame's payload is at most 125 bytes).
func (f *wsFraming) farewell(end *sessionEnd) []byte {
	if f.remaining != 0 || f.hdrLen != 0 || f.sawClose || end.wsCode == 0 {
		return nil
	}
	text := end.message
	if len(text) > 123 {
		text = text[:123]
	}
	frame := make([]byte, 0, 4+len(text))
	frame = append(frame, 0x88, byte(2+len(text)), byte(end.wsCode>>8), byte(end.wsCode))
	return append(frame, text...)
}

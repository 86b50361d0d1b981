package gateway

import (
	"encoding/binary"
	"encoding/json"
	"maps"
	"slices"

	"github.com/moby/spdystream/spdy"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// spdyFraming follows a SPDY/3.1 session (exec, attach, port-forward with SPDY) so that, when the gateway ends it,
// it can write the reason on the session's error streams. Without that, client-go takes a connection that ends
// without a status for success and kubectl exits 0 in silence.
//
// The client opens the error streams (SYN_STREAM with the header streamType: error), in header blocks compressed
// with one zlib context per direction, so every header block from the client is inflated in order, within bounds
// (spdyHeaderDecoder). Data frames are only skipped. From the server only the frame boundaries and the end of each stream matter: a
// DATA frame is the one frame the gateway can add without joining the server's compression context.
type spdyFraming struct {
	in, out spdySplitter

	headers *spdyHeaderDecoder // the client's header blocks; nil once they no longer matter

	// errorStreams are the error streams the client opened on which the server has written nothing yet: the
	// gateway's status may go there without mixing with the server's own.
	errorStreams map[uint32]bool

	portForward bool          // port-forward error streams carry text; exec and attach a Status from v4 on
	protocol    func() string // the negotiated X-Stream-Protocol-Version, known once the 101 went out
}

// maxSPDYControlFrame bounds what is kept of one control frame, compressed. Kubernetes' stream headers are a few
// hundred bytes; past this the gateway stops following the session and says nothing at its end.
const maxSPDYControlFrame = 64 << 10

// spdySplitterKeep is the capacity a splitter keeps between control frames; a larger frame's buffer is dropped.
const spdySplitterKeep = 4 << 10

func newSPDYFraming(portForward bool, protocol func() string) *spdyFraming {
	f := &spdyFraming{errorStreams: map[uint32]bool{}, portForward: portForward, protocol: protocol, headers: newSPDYHeaderDecoder()}
	f.in.onControl = f.clientControl
	f.out.onData = func(id uint32) { delete(f.errorStreams, id) }
	f.out.onControl = f.serverControl
	return f
}

func (f *spdyFraming) fromClient(p []byte) {
	f.in.feed(p)
	if f.in.lost && f.headers != nil {
		f.stopHeaders() // no later block is decoded: free the inflater now
	}
}
func (f *spdyFraming) fromServer(p []byte) { f.out.feed(p) }

// SPDY/3.1 control frame types the gateway follows.
const (
	spdySynStream = 1
	spdySynReply  = 2
	spdyRstStream = 3
	spdyHeaders   = 8
)

func (f *spdyFraming) clientControl(frame []byte) bool {
	typ := binary.BigEndian.Uint16(frame[2:4])
	if typ == spdyRstStream && len(frame) >= 12 {
		delete(f.errorStreams, binary.BigEndian.Uint32(frame[8:12])&0x7fffffff)
		return true
	}
	if f.headers == nil {
		return true // headers are no longer followed
	}
	// Where the compressed header block starts: after the frame header, the stream id and, for SYN_STREAM, the
	// associated stream id, priority and slot. The other control frames carry no header block.
	var block int
	switch typ {
	case spdySynStream:
		block = 18
	case spdySynReply, spdyHeaders:
		block = 12
	default:
		return true
	}
	if len(frame) < block {
		f.stopHeaders()
		return false
	}
	isError, err := f.headers.isErrorStream(frame[block:])
	if err != nil {
		f.stopHeaders()
		return false // the compression context cannot be trusted past a block it could not read
	}
	if typ == spdySynStream && isError {
		id := binary.BigEndian.Uint32(frame[8:12]) & 0x7fffffff
		if id == 0 {
			f.stopHeaders()
			return false
		}
		f.errorStreams[id] = true
		if !f.portForward {
			f.stopHeaders() // exec and attach have one error stream: stop decoding headers, and free the inflater
		}
	}
	return true
}

func (f *spdyFraming) stopHeaders() {
	f.headers.close()
	f.headers = nil
}

func (f *spdyFraming) serverControl(frame []byte) bool {
	if len(frame) < 12 {
		return true // SETTINGS, PING, GOAWAY and the like name no stream the gateway follows
	}
	id := binary.BigEndian.Uint32(frame[8:12]) & 0x7fffffff
	switch binary.BigEndian.Uint16(frame[2:4]) {
	case spdySynReply:
		if frame[4]&byte(spdy.ControlFlagFin) != 0 {
			delete(f.errorStreams, id)
		}
	case spdyRstStream:
		delete(f.errorStreams, id)
	}
	return true
}

// farewell is one DATA frame with FIN on each error stream still open: a Status for exec and attach from v4 of the
// stream protocol (the client decodes it and fails with its message), the message as text otherwise.
func (f *spdyFraming) farewell(end *sessionEnd) []byte {
	if f.in.lost || f.out.lost || !f.out.atBoundary() || len(f.errorStreams) == 0 {
		return nil
	}
	payload := []byte(end.message)
	if !f.portForward {
		switch f.protocol() {
		case "v4.channel.k8s.io", "v5.channel.k8s.io":
			payload, _ = json.Marshal(metav1.Status{
				TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status:   metav1.StatusFailure, Message: end.message,
				Reason: metav1.StatusReason(end.reason), Code: int32(end.code),
			})
		}
	}
	var out []byte
	for _, id := range slices.Sorted(maps.Keys(f.errorStreams)) {
		out = binary.BigEndian.AppendUint32(out, id)
		out = binary.BigEndian.AppendUint32(out, uint32(spdy.DataFlagFin)<<24|uint32(len(payload)))
		out = append(out, payload...)
	}
	return out
}

// spdySplitter cuts one direction of a SPDY/3.1 session into frames (an 8-byte header whose high bit tells control
// from data, then a 24-bit length). Data frames are skipped; control frames are gathered whole, header included.
type spdySplitter struct {
	hdr       [8]byte
	hdrLen    int
	remaining int // payload bytes of the current frame still to come
	isControl bool
	control   []byte
	lost      bool // a control frame was too large or unreadable: the session is no longer followed

	onData    func(streamID uint32)   // at each data frame's header
	onControl func(frame []byte) bool // at each complete control frame; false loses the session
}

func (s *spdySplitter) atBoundary() bool { return s.hdrLen == 0 }

func (s *spdySplitter) feed(p []byte) {
	for len(p) > 0 && !s.lost {
		if s.hdrLen < len(s.hdr) {
			n := copy(s.hdr[s.hdrLen:], p)
			s.hdrLen += n
			p = p[n:]
			if s.hdrLen < len(s.hdr) {
				return
			}
			s.remaining = int(binary.BigEndian.Uint32(s.hdr[4:8]) & 0xffffff)
			s.isControl = s.hdr[0]&0x80 != 0
			if s.isControl {
				if s.remaining > maxSPDYControlFrame {
					s.lost = true
					return
				}
				s.control = append(s.control[:0], s.hdr[:]...)
			} else if s.onData != nil {
				s.onData(binary.BigEndian.Uint32(s.hdr[0:4]) & 0x7fffffff)
			}
		}
		n := min(len(p), s.remaining)
		if s.isControl {
			s.control = append(s.control, p[:n]...)
		}
		s.remaining -= n
		p = p[n:]
		if s.remaining == 0 {
			s.hdrLen = 0
			if s.isControl && s.onControl != nil && !s.onControl(s.control) {
				s.lost = true
			}
			if cap(s.control) > spdySplitterKeep {
				s.control = nil
			}
		}
	}
}

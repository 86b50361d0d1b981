package sessionend

import (
	"encoding/binary"
	"encoding/json"
	"maps"
	"slices"

	"github.com/moby/spdystream/spdy"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/internal/streamframe"
)

// spdyFraming follows a SPDY/3.1 session (exec, attach, port-forward with SPDY) so that, when the gateway ends it,
// it can write the reason on the session's error streams. Without that, client-go takes a connection that ends
// without a status for success and kubectl exits 0 in silence.
//
// The client opens the error streams (SYN_STREAM with the header streamType: error), in header blocks compressed
// with one zlib context per direction, so every header block from the client is inflated in order, within bounds
// (streamframe.SPDYHeaders). Data frames are only skipped. From the server only the frame boundaries and the end of each stream matter: a
// DATA frame is the one frame the gateway can add without joining the server's compression context.
type spdyFraming struct {
	in, out streamframe.SPDYSplitter

	headers *streamframe.SPDYHeaders // the client's header blocks; nil once they no longer matter

	// errorStreams are the error streams the client opened on which the server has written nothing yet: the
	// gateway's status may go there without mixing with the server's own.
	errorStreams map[uint32]bool

	portForward bool          // port-forward error streams carry text; exec and attach a Status from v4 on
	protocol    func() string // the negotiated X-Stream-Protocol-Version, known once the 101 went out
}

func newSPDYFraming(portForward bool, protocol func() string) *spdyFraming {
	f := &spdyFraming{errorStreams: map[uint32]bool{}, portForward: portForward, protocol: protocol, headers: streamframe.NewSPDYHeaders()}
	f.in.OnControl = f.clientControl
	f.out.OnData = func(id uint32) { delete(f.errorStreams, id) }
	f.out.OnControl = f.serverControl
	return f
}

func (f *spdyFraming) fromClient(p []byte) {
	f.in.Feed(p)
	if f.in.Lost() && f.headers != nil {
		f.stopHeaders() // no later block is decoded: free the inflater now
	}
}
func (f *spdyFraming) fromServer(p []byte) { f.out.Feed(p) }

func (f *spdyFraming) clientControl(frame []byte) bool {
	if streamframe.ControlType(frame) == streamframe.SPDYRstStream && len(frame) >= 12 {
		delete(f.errorStreams, streamframe.ControlStreamID(frame))
		return true
	}
	if f.headers == nil {
		return true // headers are no longer followed
	}
	typ, ok, err := f.headers.StreamType(frame)
	if err != nil {
		f.stopHeaders()
		return false // the compression context cannot be trusted past a block it could not read
	}
	if ok && streamframe.ControlType(frame) == streamframe.SPDYSynStream && typ == "error" {
		id := streamframe.ControlStreamID(frame)
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
	f.headers.Close()
	f.headers = nil
}

func (f *spdyFraming) serverControl(frame []byte) bool {
	if len(frame) < 12 {
		return true // SETTINGS, PING, GOAWAY and the like name no stream the gateway follows
	}
	id := streamframe.ControlStreamID(frame)
	switch streamframe.ControlType(frame) {
	case streamframe.SPDYSynReply:
		if frame[4]&byte(spdy.ControlFlagFin) != 0 {
			delete(f.errorStreams, id)
		}
	case streamframe.SPDYRstStream:
		delete(f.errorStreams, id)
	}
	return true
}

// farewell is one DATA frame with FIN on each error stream still open: a Status for exec and attach from v4 of the
// stream protocol (the client decodes it and fails with its message), the message as text otherwise.
func (f *spdyFraming) farewell(end *End) []byte {
	if f.in.Lost() || f.out.Lost() || !f.out.AtBoundary() || len(f.errorStreams) == 0 {
		return nil
	}
	payload := []byte(end.Message)
	if !f.portForward {
		switch f.protocol() {
		case "v4.channel.k8s.io", "v5.channel.k8s.io":
			payload, _ = json.Marshal(metav1.Status{
				TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status:   metav1.StatusFailure, Message: end.Message,
				Reason: metav1.StatusReason(end.Reason), Code: int32(end.Code),
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

package sessionend

import "github.com/warren-dev/warren/internal/streamframe"

// wsFraming follows the WebSocket frames the server sends to the client (RFC 6455 5.2); the client's frames do not
// matter for a closing frame.
type wsFraming struct {
	server   streamframe.WSSplitter
	sawClose bool // the server sent a closing frame
}

func newWSFraming() *wsFraming {
	f := &wsFraming{}
	f.server.OnFrame = func(opcode byte, _ bool, _ uint64) {
		if opcode == streamframe.OpClose {
			f.sawClose = true
		}
	}
	return f
}

func (f *wsFraming) fromClient([]byte) {}

func (f *wsFraming) fromServer(p []byte) { f.server.Feed(p) }

// farewell is a closing frame with the code and reason (a control frame's payload is at most 125 bytes).
func (f *wsFraming) farewell(end *End) []byte {
	if !f.server.AtBoundary() || f.sawClose || end.WSCode == 0 {
		return nil
	}
	text := end.Message
	if len(text) > 123 {
		text = text[:123]
	}
	frame := make([]byte, 0, 4+len(text))
	frame = append(frame, 0x88, byte(2+len(text)), byte(end.WSCode>>8), byte(end.WSCode))
	return append(frame, text...)
}

package streamframe

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strings"
	"sync"
)

// Witness counts and hashes the stdout of one remote command session (exec, attach) as it passes: over WebSocket,
// the payload of the messages on channel 1 of Kubernetes' channel protocols (v1 to v5.channel.k8s.io; the first
// byte of each message names its channel); over SPDY, the data frames of the stream the client opened with
// streamType stdout. Its bytes are exactly what a client-go executor writes to its stdout writer. Safe for
// concurrent use (the two directions are fed from two goroutines).
type Witness struct {
	mu     sync.Mutex
	sum    hash.Hash
	n      int64
	failed string // why the session could not be followed; "" while it can

	// WebSocket
	ws        *WSSplitter
	inControl bool // the current frame is a control frame
	channel   int  // the current message's channel, -1 until its first payload byte

	// SPDY
	fromClient *SPDYSplitter
	fromServer *SPDYSplitter
	headers    *SPDYHeaders // nil once the stdout stream is known
	stdout     uint32       // the stdout stream, 0 until the client opened it
}

// stdoutChannel is the stdout channel of Kubernetes' WebSocket channel protocols.
const stdoutChannel = 1

// NewWebSocketWitness follows a WebSocket session that negotiated subprotocol (Sec-WebSocket-Protocol of the
// response). Only the binary channel protocols can be followed; others (base64.channel.k8s.io) are recorded as
// such by Result.
func NewWebSocketWitness(subprotocol string) *Witness {
	w := &Witness{sum: sha256.New(), channel: -1}
	p := strings.TrimSpace(subprotocol)
	if p != "channel.k8s.io" && !(strings.HasPrefix(p, "v") && strings.HasSuffix(p, ".channel.k8s.io")) {
		w.failed = "WebSocket subprotocol " + quote(p) + " is not a binary channel protocol"
		return w
	}
	w.ws = &WSSplitter{OnFrame: w.wsFrame, OnPayload: w.wsPayload}
	return w
}

// NewSPDYWitness follows a SPDY/3.1 session.
func NewSPDYWitness() *Witness {
	w := &Witness{sum: sha256.New(), headers: NewSPDYHeaders()}
	w.fromClient = &SPDYSplitter{OnControl: w.spdyClientControl}
	w.fromServer = &SPDYSplitter{OnDataPayload: w.spdyData}
	return w
}

// Unsupported is a Witness for a session it cannot follow; Result says why.
func Unsupported(why string) *Witness { return &Witness{sum: sha256.New(), failed: why} }

// FromServer follows the server's bytes (towards the client).
func (w *Witness) FromServer(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.failed != "":
	case w.ws != nil:
		w.ws.Feed(p)
	case w.fromServer != nil:
		w.fromServer.Feed(p)
		if w.fromServer.Lost() {
			w.failed = "a SPDY frame from the server could not be followed"
		}
	}
}

// FromClient follows the client's bytes (towards the server).
func (w *Witness) FromClient(p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != "" || w.fromClient == nil || w.headers == nil {
		return // WebSocket: the client's frames carry no stdout; SPDY: the stdout stream is known
	}
	w.fromClient.Feed(p)
	if w.fromClient.Lost() {
		w.failed = "a SPDY control frame from the client could not be read"
	}
}

// Result is the stdout seen so far: its byte count and SHA-256 (lowercase hex), or ok false and why not.
func (w *Witness) Result() (n int64, sha256hex string, ok bool, why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != "" {
		return 0, "", false, w.failed
	}
	return w.n, hex.EncodeToString(w.sum.Sum(nil)), true, ""
}

func (w *Witness) add(p []byte) {
	w.sum.Write(p)
	w.n += int64(len(p))
}

func (w *Witness) wsFrame(opcode byte, _ bool, _ uint64) {
	switch {
	case opcode >= OpClose:
		w.inControl = true // control frames may come between the fragments of a message
	case opcode == OpContinuation:
		w.inControl = false
	default:
		w.inControl, w.channel = false, -1 // a new message: its first payload byte names the channel
	}
}

func (w *Witness) wsPayload(p []byte) {
	if w.inControl || len(p) == 0 {
		return
	}
	if w.channel < 0 {
		w.channel = int(p[0])
		p = p[1:]
	}
	if w.channel == stdoutChannel {
		w.add(p)
	}
}

func (w *Witness) spdyClientControl(frame []byte) bool {
	if w.headers == nil {
		return true
	}
	typ, ok, err := w.headers.StreamType(frame)
	if err != nil {
		w.headers.Close()
		w.headers = nil
		return false
	}
	if ok && ControlType(frame) == SPDYSynStream && typ == "stdout" {
		if w.stdout = ControlStreamID(frame); w.stdout == 0 {
			return false
		}
		w.headers.Close() // nothing more to decode: free the inflater
		w.headers = nil
	}
	return true
}

func (w *Witness) spdyData(streamID uint32, p []byte) {
	if streamID != 0 && streamID == w.stdout {
		w.add(p)
	}
}

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + s + `"`
}

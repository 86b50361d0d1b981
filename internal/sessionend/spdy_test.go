package sessionend

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moby/spdystream/spdy"

	"github.com/warren-dev/warren/internal/streamframe"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// spdyWire writes frames the way a real SPDY/3.1 peer does, header compression included (one context per writer).
type spdyWire struct {
	buf    bytes.Buffer
	framer *spdy.Framer
}

func newSPDYWire(t *testing.T) *spdyWire {
	w := &spdyWire{}
	var err error
	if w.framer, err = spdy.NewFramer(&w.buf, nil); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *spdyWire) frame(t *testing.T, f spdy.Frame) *spdyWire {
	t.Helper()
	if err := w.framer.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	return w
}

func synStream(id uint32, headers ...string) *spdy.SynStreamFrame {
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	return &spdy.SynStreamFrame{StreamId: spdy.StreamId(id), Headers: h}
}

func synReply(id uint32) *spdy.SynReplyFrame {
	return &spdy.SynReplyFrame{StreamId: spdy.StreamId(id), Headers: http.Header{}}
}

func data(id uint32, fin bool, payload string) *spdy.DataFrame {
	f := &spdy.DataFrame{StreamId: spdy.StreamId(id), Data: []byte(payload)}
	if fin {
		f.Flags = spdy.DataFlagFin
	}
	return f
}

// execClient is what client-go's SPDY executor sends: the error stream first, closed for writing at once, then
// stdin and stdout, and some stdin.
func execClient(t *testing.T) *spdyWire {
	return newSPDYWire(t).
		frame(t, synStream(1, "streamType", "error")).frame(t, data(1, true, "")).
		frame(t, synStream(3, "streamType", "stdin")).frame(t, synStream(5, "streamType", "stdout")).
		frame(t, data(3, false, strings.Repeat("x", 70000)))
}

// execServer is the API server's side of it: replies, and output on stdout.
func execServer(t *testing.T) *spdyWire {
	return newSPDYWire(t).frame(t, synReply(1)).frame(t, synReply(3)).frame(t, synReply(5)).
		frame(t, data(5, false, "started\n"))
}

// feedSplit hands p over in pieces of n bytes, as reads and writes may cut it anywhere.
func feedSplit(feed func([]byte), p []byte, n int) {
	for len(p) > 0 {
		k := min(n, len(p))
		feed(p[:k])
		p = p[k:]
	}
}

// farewellFrames reads what the client receives (the server's frames, then the farewell) with a real SPDY framer and
// returns the data frames that came after the server's.
func farewellFrames(t *testing.T, server, farewell []byte) []*spdy.DataFrame {
	t.Helper()
	all := bytes.NewReader(append(append([]byte{}, server...), farewell...))
	fr, err := spdy.NewFramer(io.Discard, all)
	if err != nil {
		t.Fatal(err)
	}
	var got []*spdy.DataFrame
	for all.Len() > 0 {
		fromServer := int(all.Size())-all.Len() < len(server)
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the client cannot read the frames: %v", err)
		}
		if d, ok := f.(*spdy.DataFrame); ok && !fromServer {
			got = append(got, d)
		}
	}
	return got
}

var maxLengthEnd = &End{Code: 504, Reason: "Timeout", Message: "warren: the session reached the maximum stream length of 2s"}

func TestSPDYFarewellOnTheErrorStream(t *testing.T) {
	junk := []byte{0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 'j', 'u', 'n', 'k'}
	for _, split := range []int{1, 7, 1 << 20} {
		// A header block the gateway cannot read, after the error stream: exec has one, so the headers no longer
		// matter and the gateway has stopped decoding them.
		client, server := append(execClient(t).buf.Bytes(), junk...), execServer(t).buf.Bytes()
		f := newSPDYFraming(false, func() string { return "v4.channel.k8s.io" })
		feedSplit(f.fromClient, client, split)
		feedSplit(f.fromServer, server, split)
		last := f.farewell(maxLengthEnd)
		got := farewellFrames(t, server, last)
		if len(got) != 1 || got[0].StreamId != 1 || got[0].Flags != spdy.DataFlagFin {
			t.Fatalf("split %d: farewell %x, want one data frame with FIN on the error stream 1", split, last)
		}
		var st metav1.Status
		if err := json.Unmarshal(got[0].Data, &st); err != nil || st.Status != metav1.StatusFailure ||
			st.Message != maxLengthEnd.Message || st.Reason != metav1.StatusReasonTimeout || st.Code != 504 {
			t.Fatalf("split %d: the error stream carries %s (%v)", split, got[0].Data, err)
		}
	}
}

func TestSPDYFarewellText(t *testing.T) {
	// Before v4 the error stream of exec carries text; port-forward's always does, one error stream per connection.
	client := newSPDYWire(t).
		frame(t, synStream(1, "streamType", "error", "port", "80", "requestID", "0")).frame(t, data(1, true, "")).
		frame(t, synStream(3, "streamType", "data", "port", "80", "requestID", "0")).
		frame(t, synStream(5, "streamType", "error", "port", "80", "requestID", "1")).frame(t, data(5, true, "")).
		frame(t, synStream(7, "streamType", "data", "port", "80", "requestID", "1"))
	server := newSPDYWire(t).frame(t, synReply(1)).frame(t, synReply(3)).frame(t, synReply(5)).frame(t, synReply(7))
	for _, c := range []struct {
		name        string
		portForward bool
		protocol    string
		client      []byte
		streams     []spdy.StreamId
	}{
		{"port-forward", true, "portforward.k8s.io", client.buf.Bytes(), []spdy.StreamId{1, 5}},
		{"exec v3", false, "v3.channel.k8s.io", execClient(t).buf.Bytes(), []spdy.StreamId{1}},
	} {
		f := newSPDYFraming(c.portForward, func() string { return c.protocol })
		f.fromClient(c.client)
		f.fromServer(server.buf.Bytes())
		got := farewellFrames(t, server.buf.Bytes(), f.farewell(maxLengthEnd))
		if len(got) != len(c.streams) {
			t.Fatalf("%s: %d farewell frames, want %d", c.name, len(got), len(c.streams))
		}
		for i, d := range got {
			if d.StreamId != c.streams[i] || string(d.Data) != maxLengthEnd.Message || d.Flags != spdy.DataFlagFin {
				t.Fatalf("%s: frame %d on stream %d: %q", c.name, i, d.StreamId, d.Data)
			}
		}
	}
}

// TestSPDYNoFarewell: nothing is added mid-frame, on an error stream the server already wrote on or reset, or once
// the session could not be followed.
func TestSPDYNoFarewell(t *testing.T) {
	server := execServer(t).buf.Bytes()
	for _, c := range []struct {
		name           string
		client, server []byte
	}{
		{"mid-frame", execClient(t).buf.Bytes(), server[:len(server)-1]},
		{"mid-header", execClient(t).buf.Bytes(), append(append([]byte{}, server...), 0x00, 0x00)},
		{"the server wrote its status", execClient(t).buf.Bytes(), execServer(t).frame(t, data(1, true, `{"status":"Success"}`)).buf.Bytes()},
		{"the server ended the error stream", execClient(t).buf.Bytes(), execServer(t).frame(t, data(1, true, "")).buf.Bytes()},
		{"the server reset it", execClient(t).buf.Bytes(),
			execServer(t).frame(t, &spdy.RstStreamFrame{StreamId: 1, Status: spdy.Cancel}).buf.Bytes()},
		{"the client reset it", execClient(t).frame(t, &spdy.RstStreamFrame{StreamId: 1, Status: spdy.Cancel}).buf.Bytes(), server},
		{"an oversized control frame", append(execClient(t).buf.Bytes(), 0x80, 0x03, 0x00, 0x08, 0x00, 0xff, 0xff, 0xff), server},
		// (Once exec's one error stream is known, later header blocks are not decoded: see TestSPDYFarewellOnTheErrorStream.)
		{"an unreadable header block", append([]byte{0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e,
			0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 'j', 'u', 'n', 'k'}, execClient(t).buf.Bytes()...), server},
	} {
		f := newSPDYFraming(false, func() string { return "v4.channel.k8s.io" })
		f.fromClient(c.client)
		f.fromServer(c.server)
		if last := f.farewell(maxLengthEnd); last != nil {
			t.Errorf("%s: farewell %x, want none", c.name, last)
		}
	}
}

// FuzzSPDYFraming: whatever the peers send, following it never panics, and a farewell, when there is one, is made
// of well-formed data frames that a real SPDY framer reads after the server's bytes.
func FuzzSPDYFraming(f *testing.F) {
	t := &testing.T{}
	f.Add(execClient(t).buf.Bytes(), execServer(t).buf.Bytes(), uint8(7), false)
	f.Add(append(execClient(t).buf.Bytes(), 0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 1, 2), []byte{0, 0, 0, 1, 1, 0, 0, 0}, uint8(1), false)
	// Header blocks at and past the bounds, in one compression context, for port-forward (which keeps decoding).
	w := newSPDYHeaderWriter(t)
	var pf []byte
	pf = append(pf, w.synStream(t, 1, u32(3), pair("streamtype", "error"), pair("port", "80"), pair("requestid", "0"))...)
	pf = append(pf, w.control(t, streamframe.SPDYHeadersFrame, 1, u32(1), pair("a", strings.Repeat("\x00", streamframe.MaxSPDYHeaderField)))...)
	pf = append(pf, w.control(t, streamframe.SPDYSynReply, 2, u32(0))...)
	f.Add(bytes.Clone(pf), execServer(t).buf.Bytes(), uint8(3), true)
	pf = append(pf, w.synStream(t, 3, u32(1), pair("streamtype", "error"+strings.Repeat("\x00", streamframe.MaxSPDYHeaderField)))...)
	f.Add(bytes.Clone(pf), []byte{}, uint8(200), true)
	f.Add(w.synStream(t, 1, u32(1<<32-1), pair("a", "b")), []byte{}, uint8(0), true)
	f.Add(w.synStream(t, 1, u32(1), u32(1<<31), []byte("streamtype")), []byte{}, uint8(0), true)
	nuls := make([][]byte, 0, 9)
	nuls = append(nuls, u32(4))
	for i := range 4 {
		nuls = append(nuls, pair(fmt.Sprint("x", i), strings.Repeat("\x00", 4000)))
	}
	f.Add(newSPDYHeaderWriter(t).synStream(t, 1, nuls...), []byte{}, uint8(255), true)
	f.Fuzz(func(t *testing.T, client, server []byte, split uint8, portForward bool) {
		// Go's fuzzer has no hang detection: an input that loops forever must crash the worker to be reported.
		hang := time.AfterFunc(10*time.Second, func() { panic("following the SPDY session hangs on this input") })
		defer hang.Stop()
		fr := newSPDYFraming(portForward, func() string { return "v4.channel.k8s.io" })
		n := int(split) + 1
		feedSplit(fr.fromClient, client, n)
		feedSplit(fr.fromServer, server, n)
		last := fr.farewell(maxLengthEnd)
		if last == nil {
			return
		}
		r := bytes.NewReader(last)
		framer, err := spdy.NewFramer(io.Discard, r)
		if err != nil {
			t.Fatal(err)
		}
		for r.Len() > 0 {
			frame, err := framer.ReadFrame()
			if err != nil {
				t.Fatalf("farewell %x: %v", last, err)
			}
			if d, ok := frame.(*spdy.DataFrame); !ok || d.Flags != spdy.DataFlagFin {
				t.Fatalf("farewell frame %#v", frame)
			}
		}
	})
}

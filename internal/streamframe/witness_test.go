package streamframe

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"testing"

	"github.com/moby/spdystream/spdy"
)

// wsFrame encodes one frame; mask non-nil masks it (as a client does).
func wsFrame(op byte, fin bool, payload []byte, mask []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	h := []byte{b0}
	var m byte
	if mask != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		h = append(h, m|byte(n))
	case n < 1<<16:
		h = append(h, m|126, byte(n>>8), byte(n))
	default:
		h = append(h, m|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	if mask == nil {
		return append(h, payload...)
	}
	h = append(h, mask...)
	for i, c := range payload {
		h = append(h, c^mask[i%4])
	}
	return h
}

// feedSplit feeds b in random pieces, one byte to a few KiB.
func feedSplit(r *rand.Rand, b []byte, feed func([]byte)) {
	for len(b) > 0 {
		n := 1 + r.IntN(min(len(b), 5000))
		feed(b[:n])
		b = b[n:]
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestWebSocketWitness(t *testing.T) {
	stdout1 := bytes.Repeat([]byte("proc "), 30000) // > 64 KiB: the 8-byte length form
	stdout2 := []byte("tail")
	var session []byte
	session = append(session, wsFrame(OpBinary, true, append([]byte{1}, stdout1...), nil)...)
	session = append(session, wsFrame(OpBinary, true, append([]byte{2}, "stderr text"...), nil)...)
	// A fragmented stdout message with a ping between its fragments, then one masked.
	session = append(session, wsFrame(OpBinary, false, []byte{1, 't'}, nil)...)
	session = append(session, wsFrame(0x9, true, []byte("ping"), nil)...)
	session = append(session, wsFrame(OpContinuation, true, []byte("ail"), nil)...)
	session = append(session, wsFrame(OpBinary, true, append([]byte{1}, stdout2...), []byte{1, 2, 3, 4})...)
	session = append(session, wsFrame(OpBinary, true, []byte{1}, nil)...) // an empty stdout message
	session = append(session, wsFrame(OpBinary, true, append([]byte{3}, `{"status":"Success"}`...), nil)...)
	session = append(session, wsFrame(OpClose, true, []byte{3, 232}, nil)...)
	want := append(append(append([]byte{}, stdout1...), "tail"...), stdout2...)
	for seed := range uint64(20) {
		w := NewWebSocketWitness("v5.channel.k8s.io")
		w.FromClient(wsFrame(OpBinary, true, []byte{0, 'i', 'n'}, []byte{9, 9, 9, 9})) // stdin: not stdout
		feedSplit(rand.New(rand.NewPCG(seed, 1)), session, w.FromServer)
		n, got, ok, why := w.Result()
		if !ok || n != int64(len(want)) || got != sum(want) {
			t.Fatalf("seed %d: %d %s %v %s, want %d %s", seed, n, got, ok, why, len(want), sum(want))
		}
	}
	if _, _, ok, why := NewWebSocketWitness("base64.channel.k8s.io").Result(); ok || why != `WebSocket subprotocol "base64.channel.k8s.io" is not a binary channel protocol` {
		t.Fatalf("base64: %v %s", ok, why)
	}
}

// spdyPeer writes frames as a SPDY/3.1 peer does, with header compression (one context per direction).
type spdyPeer struct {
	buf    bytes.Buffer
	framer *spdy.Framer
}

func newSPDYPeer(t *testing.T) *spdyPeer {
	p := &spdyPeer{}
	var err error
	if p.framer, err = spdy.NewFramer(&p.buf, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *spdyPeer) write(t *testing.T, f spdy.Frame) {
	t.Helper()
	if err := p.framer.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
}

func syn(id uint32, streamType string) *spdy.SynStreamFrame {
	return &spdy.SynStreamFrame{StreamId: spdy.StreamId(id), Headers: http.Header{"Streamtype": {streamType}}}
}

func TestSPDYWitness(t *testing.T) {
	client, server := newSPDYPeer(t), newSPDYPeer(t)
	// client-go's order: the error stream, stdin, stdout, stderr.
	client.write(t, syn(1, "error"))
	client.write(t, syn(3, "stdin"))
	client.write(t, syn(5, "stdout"))
	client.write(t, syn(7, "stderr"))
	client.write(t, &spdy.DataFrame{StreamId: 3, Data: []byte("stdin bytes")})
	client.write(t, &spdy.PingFrame{Id: 1})
	stdout := bytes.Repeat([]byte{0, 1, 2, 250}, 50000)
	for _, id := range []uint32{1, 3, 5, 7} {
		server.write(t, &spdy.SynReplyFrame{StreamId: spdy.StreamId(id), Headers: http.Header{}})
	}
	server.write(t, &spdy.DataFrame{StreamId: 5, Data: stdout[:70000]})
	server.write(t, &spdy.DataFrame{StreamId: 7, Data: []byte("stderr")})
	server.write(t, &spdy.DataFrame{StreamId: 5, Data: stdout[70000:]})
	server.write(t, &spdy.DataFrame{StreamId: 5, Flags: spdy.DataFlagFin})
	server.write(t, &spdy.DataFrame{StreamId: 1, Data: []byte("{}"), Flags: spdy.DataFlagFin})
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 2))
		w := NewSPDYWitness()
		// The client's frames come first, as on a real session: the server answers streams it was told about.
		feedSplit(r, client.buf.Bytes(), w.FromClient)
		feedSplit(r, server.buf.Bytes(), w.FromServer)
		n, got, ok, why := w.Result()
		if !ok || n != int64(len(stdout)) || got != sum(stdout) {
			t.Fatalf("seed %d: %d %s %v %s", seed, n, got, ok, why)
		}
	}
	// A session without a stdout stream witnesses nothing.
	w := NewSPDYWitness()
	noStdout := newSPDYPeer(t)
	noStdout.write(t, syn(1, "error"))
	w.FromClient(noStdout.buf.Bytes())
	w.FromServer(server.buf.Bytes())
	if n, _, ok, _ := w.Result(); !ok || n != 0 {
		t.Fatalf("no stdout stream: %d %v", n, ok)
	}
	// Garbage where a compressed header block should be loses the session, and says so.
	w = NewSPDYWitness()
	w.FromClient([]byte{0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef})
	if _, _, ok, why := w.Result(); ok || why != "a SPDY control frame from the client could not be read" {
		t.Fatalf("garbage: %v %q", ok, why)
	}
}

// FuzzWitness: whatever the peers send, following it never panics.
func FuzzWitness(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 1, 'h', 'i'}, []byte{0x80, 3, 0, 1}, true)
	f.Fuzz(func(t *testing.T, server, client []byte, ws bool) {
		w := NewSPDYWitness()
		if ws {
			w = NewWebSocketWitness("v5.channel.k8s.io")
		}
		w.FromClient(client)
		w.FromServer(server)
		w.Result()
	})
}

// TestWitnessSPDYHeaderBomb: a client's header block that inflates past the bounds (24 values of 1 MiB of NULs,
// ~24 KB compressed) stops the connector's witness with bounded memory; the witness says so.
func TestWitnessSPDYHeaderBomb(t *testing.T) {
	var block bytes.Buffer
	zw, err := zlib.NewWriterLevelDict(&block, zlib.BestCompression, []byte(SPDYDictionary))
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	zw.Write(u32(24))
	nuls := make([]byte, 1<<20)
	for i := range 24 {
		zw.Write(u32(3))
		fmt.Fprintf(zw, "x%02d", i)
		zw.Write(u32(uint32(len(nuls))))
		zw.Write(nuls)
	}
	zw.Flush()
	frame := binary.BigEndian.AppendUint32(nil, 0x80030000|SPDYSynStream)
	frame = binary.BigEndian.AppendUint32(frame, uint32(10+block.Len()))
	frame = append(append(append(frame, u32(1)...), 0, 0, 0, 0, 0, 0), block.Bytes()...)
	var before, after runtime.MemStats
	w := NewSPDYWitness()
	runtime.GC()
	runtime.ReadMemStats(&before)
	w.FromClient(frame)
	runtime.ReadMemStats(&after)
	if _, _, ok, why := w.Result(); ok || why != "a SPDY control frame from the client could not be read" {
		t.Fatalf("after a bomb: ok %v, %q", ok, why)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("a %d-byte bomb frame allocated %d bytes", len(frame), n)
	}
}

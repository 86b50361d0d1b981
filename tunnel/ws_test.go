package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// recorder is the wire: it keeps every Write call separately.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (r *recorder) Read(p []byte) (int, error) { return 0, io.EOF }
func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}
func (r *recorder) Close() error { return nil }

func (r *recorder) all() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.writes, nil)
}

func yamuxHeader(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:], 7) // stream id
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// readFrames parses frames from the wire on its own (RFC 6455 5.2), unmasking, and returns each frame's opcode and
// payload. client tells whether a client wrote them (masked).
func readFrames(t *testing.T, wire []byte, client bool) (ops []byte, payloads [][]byte) {
	t.Helper()
	for len(wire) > 0 {
		op, masked, n := wire[0]&0x0f, wire[1]&0x80 != 0, uint64(wire[1]&0x7f)
		if masked != client {
			t.Fatalf("frame %d: masked=%v from a client=%v", len(ops), masked, client)
		}
		wire = wire[2:]
		switch n {
		case 126:
			n, wire = uint64(binary.BigEndian.Uint16(wire)), wire[2:]
		case 127:
			n, wire = binary.BigEndian.Uint64(wire), wire[8:]
		}
		var key [4]byte
		if masked {
			copy(key[:], wire)
			wire = wire[4:]
		}
		p := append([]byte(nil), wire[:n]...)
		mask(key, 0, p)
		ops, payloads, wire = append(ops, op), append(payloads, p), wire[n:]
	}
	return ops, payloads
}

func TestYamuxDataFrameGoesOutAsOneMessage(t *testing.T) {
	for _, client := range []bool{true, false} {
		for _, size := range []int{1, 300, 64<<10 - 20, 64 << 10, 1 << 20} {
			w := &recorder{}
			c := newWSConn(w, nil, client, nil, nil, time.Second)
			body := make([]byte, size)
			rand.Read(body)
			hdr := yamuxHeader(yamuxTypeData, uint32(size))
			if n, err := c.Write(hdr); n != len(hdr) || err != nil {
				t.Fatalf("header write = %d, %v", n, err)
			}
			if len(w.writes) != 0 {
				t.Fatalf("the header went out alone")
			}
			if n, err := c.Write(body); n != size || err != nil {
				t.Fatalf("body write = %d, %v", n, err)
			}
			_, payloads := readFrames(t, w.all(), client)
			if len(payloads) != 1 || !bytes.Equal(payloads[0], append(hdr, body...)) {
				t.Fatalf("client=%v size=%d: %d frames, want one frame of header and body", client, size, len(payloads))
			}
			if want := (size + 14 + chunkSize - 1) / (chunkSize + 14); client && len(w.writes) > want+1 {
				t.Errorf("client size=%d: %d writes, want about %d (64 KiB chunks)", size, len(w.writes), want)
			}
		}
	}
}

func TestControlHeadersAndMismatchedBodiesPassThrough(t *testing.T) {
	w := &recorder{}
	c := newWSConn(w, nil, true, nil, nil, time.Second)
	update := yamuxHeader(1, 1<<20) // a window update: its length is a delta, no body follows
	c.Write(update)
	data := yamuxHeader(yamuxTypeData, 10)
	c.Write(data)
	c.Write([]byte("short")) // not the announced 10 bytes: both go out as they are
	_, payloads := readFrames(t, w.all(), true)
	got := bytes.Join(payloads, nil)
	want := bytes.Join([][]byte{update, data, []byte("short")}, nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("stream bytes differ")
	}
	if len(payloads) != 3 {
		t.Fatalf("%d frames, want 3 (window update, header, stray body)", len(payloads))
	}
}

func TestMaskMatchesBytewise(t *testing.T) {
	key := [4]byte{0x11, 0x22, 0x33, 0x44}
	for pos := range 4 {
		for _, n := range []int{0, 1, 7, 8, 15, 16, 17, 100, 1000} {
			b := make([]byte, n)
			rand.Read(b)
			want := append([]byte(nil), b...)
			p := pos
			for i := range want {
				want[i] ^= key[p&3]
				p++
			}
			if got := mask(key, pos, b); got != p&3 || !bytes.Equal(b, want) {
				t.Fatalf("pos %d n %d: mask differs", pos, n)
			}
		}
	}
}

// TestReaderHandlesControlAndFragments feeds a server the frames a compliant client may send: a ping between two
// fragments of a message, then a close.
func TestReaderHandlesControlAndFragments(t *testing.T) {
	w := &recorder{}
	client := newWSConn(w, nil, true, nil, nil, time.Second)
	client.writeFrameLocked(opBinary&0x0f, []byte("hello "), nil)
	client.writeFrameLocked(opPing, []byte("p1"), nil)
	client.writeFrameLocked(opContinuation, []byte("world"), nil)
	client.writeFrameLocked(opClose, []byte{0x03, 0xe8}, nil)
	// Clear FIN on the first frame: it begins a fragmented message.
	wire := w.all()
	wire[0] &^= 0x80

	answers := &recorder{}
	server := newWSConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{bytes.NewReader(wire), answers, io.NopCloser(nil)}, nil, false, nil, nil, time.Second)
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
	ops, payloads := readFrames(t, answers.all(), false)
	if len(ops) != 2 || ops[0] != opPong || string(payloads[0]) != "p1" || ops[1] != opClose {
		t.Fatalf("answers: ops %v payloads %q, want pong p1 and close", ops, payloads)
	}
}

func TestReaderRefusesWhatTheTunnelNeverSends(t *testing.T) {
	cases := map[string][]byte{
		"text frame":              {0x81, 0x81, 1, 2, 3, 4, 'x'},
		"unmasked client frame":   {0x82, 0x01, 'x'},
		"reserved bit":            {0xc2, 0x81, 1, 2, 3, 4, 'x'},
		"long control frame":      append([]byte{0x89, 0xfe, 0, 200, 1, 2, 3, 4}, make([]byte, 200)...),
		"fragmented control":      {0x09, 0x80, 1, 2, 3, 4},
		"length with the top bit": {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4},
	}
	for name, wire := range cases {
		server := newWSConn(struct {
			io.Reader
			io.Writer
			io.Closer
		}{bytes.NewReader(wire), io.Discard, io.NopCloser(nil)}, nil, false, nil, nil, time.Second)
		if _, err := server.Read(make([]byte, 10)); !errors.Is(err, errProtocol) {
			t.Errorf("%s: Read error = %v, want a protocol error", name, err)
		}
	}
}

func TestCorkGathersAFrameIntoOneWrite(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var got [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			n, err := b.Read(buf)
			if err != nil {
				return
			}
			got = append(got, append([]byte(nil), buf[:n]...))
		}
	}()
	cc := &corkConn{Conn: a}
	cc.cork()
	for _, s := range []string{"one ", "record ", "at a time"} {
		cc.Write([]byte(s))
	}
	if err := cc.uncork(); err != nil {
		t.Fatal(err)
	}
	cc.Write([]byte("!")) // uncorked: straight through
	a.Close()
	<-done
	if len(got) != 2 || string(got[0]) != "one record at a time" || string(got[1]) != "!" {
		t.Fatalf("writes on the wire: %q", got)
	}
}

// TestInteroperatesWithAnotherWebSocketImplementation runs the tunnel's framing against github.com/coder/websocket
// (what earlier gateways and connectors used) in both roles, so that mixed versions keep working.
func TestInteroperatesWithAnotherWebSocketImplementation(t *testing.T) {
	payload := make([]byte, 3<<20)
	rand.Read(payload)

	t.Run("coder client, tunnel server", func(t *testing.T) {
		got := make(chan []byte, 1)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := upgradeConn(w, r, Config{}.withDefaults())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			b, _ := io.ReadAll(io.LimitReader(c, int64(len(payload))))
			c.Write(b) // echo as one frame
			got <- b
		}))
		defer srv.Close()
		ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		go nc.Write(payload)
		back := make([]byte, len(payload))
		if _, err := io.ReadFull(nc, back); err != nil || !bytes.Equal(back, payload) {
			t.Fatalf("echo through the tunnel server differs: %v", err)
		}
		if b := <-got; !bytes.Equal(b, payload) {
			t.Fatal("the tunnel server read different bytes")
		}
	})

	t.Run("tunnel client, coder server", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
			if err != nil {
				return
			}
			defer ws.CloseNow()
			nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
			io.Copy(nc, nc) // echo until the client leaves; reading also answers pings
		}))
		defer srv.Close()
		c, _, err := dialConn(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), DialOptions{}, Config{}.withDefaults())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pong := make(chan struct{}, 1)
		c.onPong = func() { pong <- struct{}{} }
		go func() {
			c.Write(payload[:100])
			c.Write(payload[100:])
		}()
		back := make([]byte, len(payload))
		if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, payload) {
			t.Fatalf("echo through the other server differs: %v", err)
		}
		if err := c.ping(); err != nil {
			t.Fatal(err)
		}
		go c.Read(make([]byte, 1)) // the pong arrives through the reader
		select {
		case <-pong:
		case <-time.After(5 * time.Second):
			t.Fatal("no pong")
		}
	})
}

package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
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
	// The reader never writes: the pong goes out from a goroutine of its own, the answer to the Close from Close,
	// which yamux calls as soon as Read ends.
	server.Close()
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

	// The closing handshake both ways: a text message is refused with 1003, a Close is answered with its code.
	for _, tc := range []struct {
		name  string
		peer  func(ctx context.Context, ws *websocket.Conn) error
		check func(err error) string
	}{
		{"coder client sends text", func(ctx context.Context, ws *websocket.Conn) error {
			if err := ws.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
				return err
			}
			_, _, err := ws.Read(ctx)
			return err
		}, func(err error) string {
			if websocket.CloseStatus(err) != websocket.StatusUnsupportedData || !strings.Contains(err.Error(), "binary messages only") {
				return fmt.Sprintf("coder read %v, want close 1003 saying binary messages only", err)
			}
			return ""
		}},
		{"coder client closes", func(ctx context.Context, ws *websocket.Conn) error {
			return ws.Close(websocket.StatusGoingAway, "bye")
		}, func(err error) string {
			if err != nil {
				return fmt.Sprintf("coder's closing handshake: %v, want it answered", err)
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served := make(chan error, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := upgradeConn(w, r, Config{}.withDefaults())
				if err != nil {
					served <- err
					return
				}
				_, err = io.ReadAll(c)
				c.Close() // as yamux does once Read fails
				served <- err
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			if msg := tc.check(tc.peer(ctx, ws)); msg != "" {
				t.Error(msg)
			}
			<-served
		})
	}

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

// stalledPeer is a peer that stopped reading: every Write blocks until the connection is closed. Its Read returns
// what in holds, then blocks until closed too.
type stalledPeer struct {
	in     io.Reader
	closed chan struct{}
	once   sync.Once
}

func newStalledPeer(in []byte) *stalledPeer {
	return &stalledPeer{in: bytes.NewReader(in), closed: make(chan struct{})}
}

func (p *stalledPeer) Read(b []byte) (int, error) {
	if n, err := p.in.Read(b); err == nil {
		return n, nil
	}
	<-p.closed
	return 0, net.ErrClosed
}

func (p *stalledPeer) Write(b []byte) (int, error) {
	<-p.closed
	return 0, net.ErrClosed
}

func (p *stalledPeer) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// TestCloseSendsACloseFrameAndNothingAfter: Close says goodbye with 1000 (RFC 6455 5.5.1), and no frame goes out
// after it, data or control.
func TestCloseSendsACloseFrameAndNothingAfter(t *testing.T) {
	for _, client := range []bool{true, false} {
		w := &recorder{}
		c := newWSConn(w, nil, client, nil, nil, time.Second)
		if _, err := c.Write([]byte("before")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := c.Write([]byte("after")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close = %v, want net.ErrClosed", err)
		}
		if _, err := c.Write(yamuxHeader(yamuxTypeData, 5)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write of a data header after Close = %v, want net.ErrClosed", err)
		}
		if err := c.ping(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("ping after Close = %v, want net.ErrClosed", err)
		}
		ops, payloads := readFrames(t, w.all(), client)
		if len(ops) != 2 || ops[0] != opBinary || ops[1] != opClose || !bytes.Equal(payloads[1], []byte{0x03, 0xe8}) {
			t.Fatalf("client=%v: sent %v %q, want the data and a Close 1000", client, ops, payloads)
		}
	}
}

// TestNoDataAfterThePeersClose: once the peer's Close is read, nothing but the answer goes out, whatever yamux
// still had to send.
func TestNoDataAfterThePeersClose(t *testing.T) {
	w := &recorder{}
	going := closeFrame(1001, "shutting down").encode(false)
	c := newWSConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{bytes.NewReader(going), w, io.NopCloser(nil)}, nil, false, nil, nil, time.Second)
	if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v, want io.EOF", n, err)
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after the peer's Close = %v, want net.ErrClosed", err)
	}
	c.Close()
	ops, payloads := readFrames(t, w.all(), false)
	if len(ops) != 1 || ops[0] != opClose || !bytes.Equal(payloads[0], []byte{0x03, 0xe9}) {
		t.Fatalf("sent %v %q, want only the Close answer 1001", ops, payloads)
	}
}

// TestFailureCloseSaysWhy: a peer that breaks the protocol learns why from the Close's reason.
func TestFailureCloseSaysWhy(t *testing.T) {
	w := &recorder{}
	c := newWSConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{bytes.NewReader(continuation("x", true).encode(false)), w, io.NopCloser(nil)}, nil, false, nil, nil, time.Second)
	_, err := c.Read(make([]byte, 10))
	if !errors.Is(err, errProtocol) || err.Error() != "websocket protocol error: continuation frame with no message to continue" {
		t.Fatalf("Read = %v", err)
	}
	c.Close()
	_, payloads := readFrames(t, w.all(), false)
	if want := "\x03\xeacontinuation frame with no message to continue"; len(payloads) != 1 || string(payloads[0]) != want {
		t.Fatalf("sent %q, want Close %q", payloads, want)
	}
}

// TestReaderNeverWaitsOnWrites: a peer that floods pings and reads nothing cannot stall the reader (and with it
// yamux's receive loop) behind the pongs it is owed. Were the reader to write them itself, two ends doing so to each
// other with full send buffers would deadlock.
func TestReaderNeverWaitsOnWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var in []byte
		for range 100 {
			in = append(in, control(opPing, "are you there").encode(false)...)
		}
		in = append(in, dataFrame("payload").encode(false)...)
		peer := newStalledPeer(in)
		c := newWSConn(peer, nil, false, nil, nil, 10*time.Second)
		read := make(chan string, 1)
		go func() {
			buf := make([]byte, 16)
			n, _ := c.Read(buf)
			read <- string(buf[:n])
		}()
		synctest.Wait()
		select {
		case got := <-read:
			if got != "payload" {
				t.Errorf("read %q", got)
			}
		default:
			c.Close()
			t.Fatal("the reader is blocked: it waits on a write to a peer that does not read")
		}
		start := time.Now()
		c.Close()
		if d := time.Since(start); d != closeFrameTimeout {
			t.Errorf("Close took %v with a pong stuck on the peer, want closeFrameTimeout (%v)", d, closeFrameTimeout)
		}
	})
}

// TestWriteTimesOutOnAStalledPeer: a write to a peer that stopped reading fails after the write timeout, and the
// connection is closed at once, not closeFrameTimeout later.
func TestWriteTimesOutOnAStalledPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		peer := newStalledPeer(nil)
		c := newWSConn(peer, nil, true, nil, nil, 10*time.Second)
		start := time.Now()
		_, err := c.Write(make([]byte, 1000))
		if !errors.Is(err, errWriteTimeout) {
			t.Fatalf("Write = %v, want errWriteTimeout", err)
		}
		synctest.Wait() // the timer's Close
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("Write failed after %v, want the write timeout, 10s", d)
		}
		select {
		case <-peer.closed:
		default:
			t.Error("the connection is still open after the write timed out")
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, errWriteTimeout) {
			t.Errorf("Write after the timeout = %v, want errWriteTimeout (sticky)", err)
		}
		c.Close()
	})
}

// TestCloseGivesUpOnAPeerThatStoppedReading: Close holds its caller at most closeFrameTimeout for its Close frame.
func TestCloseGivesUpOnAPeerThatStoppedReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		peer := newStalledPeer(nil)
		c := newWSConn(peer, nil, false, nil, nil, time.Minute)
		start := time.Now()
		c.Close()
		if d := time.Since(start); d != closeFrameTimeout {
			t.Errorf("Close took %v, want closeFrameTimeout (%v)", d, closeFrameTimeout)
		}
	})
}

// TestWriteHasOneCaller: Write is yamux's send loop's alone (a held-back header waits for its body); a second,
// concurrent caller is refused rather than let in between the two.
func TestWriteHasOneCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		peer := newStalledPeer(nil)
		c := newWSConn(peer, nil, true, nil, nil, time.Minute)
		defer c.Close()
		go c.Write([]byte("blocked on the peer"))
		synctest.Wait()
		if _, err := c.Write([]byte("second writer")); !errors.Is(err, errConcurrentWrite) {
			t.Fatalf("concurrent Write = %v, want errConcurrentWrite", err)
		}
	})
}

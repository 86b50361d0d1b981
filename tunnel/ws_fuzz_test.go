package tunnel

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzPeer is what a peer sent (in) and what the connection wrote back (out).
type fuzzPeer struct {
	in  *bytes.Reader
	out *recorder
}

func (p fuzzPeer) Read(b []byte) (int, error)  { return p.in.Read(b) }
func (p fuzzPeer) Write(b []byte) (int, error) { return p.out.Write(b) }
func (p fuzzPeer) Close() error                { return nil }

// FuzzWSRead feeds arbitrary bytes to both sides' frame reader: whatever a peer sends, reading ends in data or an
// error, never a panic, a hang or an allocation sized by the peer; and what the connection sends back, once closed,
// is well-formed: pongs, then one Close with a code an endpoint may send and a UTF-8 reason, nothing after it.
func FuzzWSRead(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c'}, false)                                  // unmasked binary frame, read by a client
	f.Add([]byte{0x82, 0x83, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3}, true)           // masked, read by the server
	f.Add([]byte{0x89, 0x00, 0x82, 0x01, 'x'}, false)                                // ping then data
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false) // length overflow
	f.Add([]byte{0x81, 0x01, 'x'}, false)                                            // text frame
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8}, false)                                     // close
	// The Autobahn cases, as each end reads them.
	for _, tc := range autobahnCases() {
		var wire []byte
		for _, fr := range tc.frames {
			wire = append(wire, fr.encode(true)...)
		}
		if len(wire) <= 4<<10 {
			f.Add(wire, false)
		}
		wire = wire[:0]
		for _, fr := range tc.frames {
			wire = append(wire, fr.encode(false)...)
		}
		if len(wire) <= 4<<10 {
			f.Add(wire, true)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, server bool) {
		out := &recorder{}
		c := newWSConn(fuzzPeer{bytes.NewReader(data), out}, nil, !server, nil, nil, time.Second)
		buf := make([]byte, 4096)
		total := 0
		for range 1 << 16 {
			n, err := c.Read(buf)
			total += n
			if err != nil {
				break
			}
			if n == 0 && total > len(data) {
				t.Fatal("reads return nothing without an error")
			}
		}
		if total > len(data) {
			t.Fatalf("read %d payload bytes out of %d input bytes", total, len(data))
		}
		c.Close()
		ops, payloads := readFrames(t, out.all(), !server)
		if len(ops) == 0 || ops[len(ops)-1] != opClose {
			t.Fatalf("sent %v: want a Close last", ops)
		}
		for _, op := range ops[:len(ops)-1] {
			if op != opPong {
				t.Fatalf("sent %v: only pongs may come before the Close", ops)
			}
		}
		if p := payloads[len(payloads)-1]; len(p) > 0 {
			if len(p) < 2 || len(p) > maxControlPayload || !validCloseCode(binary.BigEndian.Uint16(p)) || !utf8.Valid(p[2:]) {
				t.Fatalf("sent Close %q: not a valid code and reason", p)
			}
		}
	})
}

package tunnel

import (
	"bytes"
	"testing"
	"time"
)

// fuzzPeer is what a peer sent (in) and where the frames written back go (discarded).
type fuzzPeer struct{ in *bytes.Reader }

func (p fuzzPeer) Read(b []byte) (int, error)  { return p.in.Read(b) }
func (p fuzzPeer) Write(b []byte) (int, error) { return len(b), nil }
func (p fuzzPeer) Close() error                { return nil }

// FuzzWSRead feeds arbitrary bytes to both sides' frame reader: whatever a peer sends, reading ends in data or an
// error, never a panic, a hang or an allocation sized by the peer.
func FuzzWSRead(f *testing.F) {
	f.Add([]byte{0x82, 0x03, 'a', 'b', 'c'}, false)                                  // unmasked binary frame, read by a client
	f.Add([]byte{0x82, 0x83, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3}, true)           // masked, read by the server
	f.Add([]byte{0x89, 0x00, 0x82, 0x01, 'x'}, false)                                // ping then data
	f.Add([]byte{0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false) // length overflow
	f.Add([]byte{0x81, 0x01, 'x'}, false)                                            // text frame
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8}, false)                                     // close
	f.Fuzz(func(t *testing.T, data []byte, server bool) {
		c := newWSConn(fuzzPeer{bytes.NewReader(data)}, nil, !server, nil, nil, time.Second)
		defer c.Close()
		buf := make([]byte, 4096)
		total := 0
		for range 1 << 16 {
			n, err := c.Read(buf)
			total += n
			if err != nil {
				return
			}
			if n == 0 && total > len(data) {
				t.Fatal("reads return nothing without an error")
			}
		}
		if total > len(data) {
			t.Fatalf("read %d payload bytes out of %d input bytes", total, len(data))
		}
	})
}

package tunnel

// The cases of the Autobahn WebSocket test suite (github.com/crossbario/autobahn-testsuite,
// autobahntestsuite/autobahntestsuite/case/) that apply to a binary-only tunnel, ported as tables: the suite itself
// is a Python tool that cannot run here. Each case runs against both ends of the tunnel, the server (the gateway,
// which reads masked frames) and the client (the connector, which reads unmasked ones), and where the suite chops
// the octets on the wire, in those chops.
//
// What the suite sends as text is sent as binary here (the tunnel carries binary messages only and answers a text
// message with 1003, which the 1.1 and 6.x cases check instead). Not ported: 6.2-6.23 and 9.1, 9.3, 9.5 (UTF-8 text
// messages: refused as text, never validated), 9.7-9.8 (round-trip times: BenchmarkRoundTrip512B measures those),
// 10.1.1 (auto-fragmentation of what an implementation sends: the tunnel sends each yamux frame as one WebSocket
// frame, see TestYamuxDataFrameGoesOutAsOneMessage), 12.x and 13.x (permessage-deflate: no extension is negotiated,
// so compressed frames fail on their reserved bit, as 3.1 checks).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// wsFrame is one frame a peer sends, before masking.
type wsFrame struct {
	fin       bool
	rsv       byte // the three reserved bits, 0-7
	op        byte
	payload   []byte
	wrongMask bool // masked by a server or unmasked by a client
}

func dataFrame(p string) wsFrame     { return wsFrame{fin: true, op: opBinary, payload: []byte(p)} }
func firstFragment(p string) wsFrame { return wsFrame{op: opBinary, payload: []byte(p)} }
func continuation(p string, fin bool) wsFrame {
	return wsFrame{fin: fin, op: opContinuation, payload: []byte(p)}
}
func control(op byte, p string) wsFrame { return wsFrame{fin: true, op: op, payload: []byte(p)} }

func closeFrame(code uint16, reason string) wsFrame {
	return control(opClose, string(binary.BigEndian.AppendUint16(nil, code))+reason)
}

// encode writes f as the peer of a client end (toClient) or of a server end would: masked for a server.
func (f wsFrame) encode(toClient bool) []byte {
	b := []byte{f.rsv<<4 | f.op, 0}
	if f.fin {
		b[0] |= 0x80
	}
	masked := toClient == f.wrongMask // a client reads unmasked frames, a server masked ones
	n := len(f.payload)
	switch {
	case n <= 125:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := append([]byte(nil), f.payload...)
	if masked {
		b[1] |= 0x80
		key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
		b = append(b, key[:]...)
		mask(key, 0, p)
	}
	return append(b, p...)
}

// choppedReader hands out its chops one Read at a time, like a peer whose octets arrive in pieces.
type choppedReader struct{ chops [][]byte }

func (r *choppedReader) Read(p []byte) (int, error) {
	for len(r.chops) > 0 && len(r.chops[0]) == 0 {
		r.chops = r.chops[1:]
	}
	if len(r.chops) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chops[0])
	r.chops[0] = r.chops[0][n:]
	return n, nil
}

// chopping is how the suite sends the octets of a case: in one write, a write per frame, or a fixed size per write.
type chopping struct {
	name string
	size int // octets per chop; 0: per frame; -1: all at once
}

var (
	oneChop   = chopping{"one chop", -1}
	frameWise = chopping{"frame-wise", 0}
	octetWise = chopping{"octet-wise", 1}
)

func (ch chopping) chop(frames [][]byte) [][]byte {
	switch ch.size {
	case -1:
		return [][]byte{bytes.Join(frames, nil)}
	case 0:
		return frames
	}
	all := bytes.Join(frames, nil)
	var out [][]byte
	for len(all) > 0 {
		n := min(ch.size, len(all))
		out, all = append(out, all[:n]), all[n:]
	}
	return out
}

// autobahnCase is one case: what the peer sends, and what the tunnel must make of it.
type autobahnCase struct {
	id     string // the suite's case number; "RFC 6455 x.y" for a rule the suite does not test from this side
	frames []wsFrame
	chops  []chopping // default: all three of oneChop, frameWise, octetWise

	data string // the byte stream read
	// pongs are the payloads answered, in order. With latestPong, only the last must be: a pong may answer the
	// latest of several pings (RFC 6455 5.5.3).
	pongs      []string
	latestPong bool
	// close is the code of the Close frame the tunnel sends in the end: the peer's echoed, 1002 or 1003 when it
	// fails the connection, closeNoStatus for an empty one.
	close uint16
	// end is how Read ends: "eof" (the peer's normal Close), "failed" (a protocol error), "peer" (the peer's Close
	// with another code).
	end string
}

// binaryOf is the frames of a payload of n octets (0xfe, as the suite sends) in fragments of frag octets.
func binaryOf(n, frag int) []wsFrame {
	payload := string(bytes.Repeat([]byte{0xfe}, n))
	if frag >= n {
		return []wsFrame{dataFrame(payload)}
	}
	var fs []wsFrame
	for i := 0; i < n; i += frag {
		p := payload[i:min(i+frag, n)]
		switch {
		case i == 0:
			fs = append(fs, firstFragment(p))
		default:
			fs = append(fs, continuation(p, i+frag >= n))
		}
	}
	return fs
}

func autobahnCases() []autobahnCase {
	normal := closeFrame(closeNormal, "")
	hello := "Hello, world!"
	cases := []autobahnCase{}
	add := func(c ...autobahnCase) { cases = append(cases, c...) }

	// 1.x: framing, payload lengths at each boundary of the length encoding.
	for i, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		payload := strings.Repeat("*", n)
		add(autobahnCase{id: fmt.Sprintf("1.1.%d", i+1), frames: []wsFrame{control(opText, payload), normal},
			close: closeUnsupportedData, end: "failed"})
		add(autobahnCase{id: fmt.Sprintf("1.2.%d", i+1), frames: append(binaryOf(n, n), normal),
			chops: []chopping{oneChop, frameWise}, data: strings.Repeat("\xfe", n), close: closeNormal, end: "eof"})
	}
	add(autobahnCase{id: "1.1.8", frames: []wsFrame{control(opText, strings.Repeat("*", 65536)), normal},
		chops: []chopping{{"997 octets", 997}}, close: closeUnsupportedData, end: "failed"})
	add(autobahnCase{id: "1.2.8", frames: append(binaryOf(65536, 65536), normal),
		chops: []chopping{{"997 octets", 997}}, data: strings.Repeat("\xfe", 65536), close: closeNormal, end: "eof"})

	// 2.x: pings and pongs.
	add(
		autobahnCase{id: "2.1", frames: []wsFrame{control(opPing, ""), normal}, pongs: []string{""}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.2", frames: []wsFrame{control(opPing, hello), normal}, pongs: []string{hello}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.3", frames: []wsFrame{control(opPing, "\x00\xff\xfe\xfd\xfc\xfb\x00\xff"), normal},
			pongs: []string{"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.4", frames: []wsFrame{control(opPing, strings.Repeat("\xfe", 125)), normal},
			chops: []chopping{oneChop, frameWise}, pongs: []string{strings.Repeat("\xfe", 125)}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.5", frames: []wsFrame{control(opPing, strings.Repeat("\xfe", 126)), normal},
			close: closeProtocolError, end: "failed"},
		autobahnCase{id: "2.6", frames: []wsFrame{control(opPing, strings.Repeat("\xfe", 125)), normal},
			chops: []chopping{octetWise}, pongs: []string{strings.Repeat("\xfe", 125)}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.7", frames: []wsFrame{control(opPong, ""), normal}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.8", frames: []wsFrame{control(opPong, "unsolicited pong payload"), normal}, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.9", frames: []wsFrame{control(opPong, "unsolicited pong payload"), control(opPing, "ping payload"), normal},
			pongs: []string{"ping payload"}, close: closeNormal, end: "eof"},
	)
	var pings []wsFrame
	for i := range 10 {
		pings = append(pings, control(opPing, fmt.Sprintf("payload-%d", i)))
	}
	add(
		autobahnCase{id: "2.10", frames: append(pings, normal), chops: []chopping{oneChop, frameWise},
			pongs: []string{"payload-9"}, latestPong: true, close: closeNormal, end: "eof"},
		autobahnCase{id: "2.11", frames: append(pings, normal), chops: []chopping{octetWise},
			pongs: []string{"payload-9"}, latestPong: true, close: closeNormal, end: "eof"},
	)

	// 3.x: reserved bits, which no extension gave a meaning. The octets before the bad frame are delivered; the
	// ping after it is not answered.
	rsv := func(f wsFrame, bits byte) wsFrame { f.rsv = bits; return f }
	add(
		autobahnCase{id: "3.1", frames: []wsFrame{rsv(control(opText, hello), 1)}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.2", frames: []wsFrame{dataFrame(hello), rsv(dataFrame(hello), 2), control(opPing, "")},
			data: hello, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.3", frames: []wsFrame{dataFrame(hello), rsv(dataFrame(hello), 3), control(opPing, "")},
			chops: []chopping{frameWise, octetWise}, data: hello, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.4", frames: []wsFrame{dataFrame(hello), rsv(dataFrame(hello), 4), control(opPing, "")},
			chops: []chopping{octetWise}, data: hello, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.5", frames: []wsFrame{rsv(dataFrame("\x00\xff\xfe\xfd\xfc\xfb\x00\xff"), 5)}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.6", frames: []wsFrame{rsv(control(opPing, hello), 6)}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "3.7", frames: []wsFrame{rsv(normal, 7)}, close: closeProtocolError, end: "failed"},
	)

	// 4.x: reserved opcodes, non-control (3-7) and control (11-15).
	for i, op := range []byte{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		id := fmt.Sprintf("4.%d.%d", 1+i/5, 1+i%5)
		switch i % 5 {
		case 0:
			add(autobahnCase{id: id, frames: []wsFrame{control(op, "")}, close: closeProtocolError, end: "failed"})
		case 1:
			add(autobahnCase{id: id, frames: []wsFrame{control(op, "reserved opcode payload")}, close: closeProtocolError, end: "failed"})
		default:
			add(autobahnCase{id: id, frames: []wsFrame{dataFrame(hello), {fin: true, op: op, payload: []byte("reserved")}, control(opPing, "")},
				data: hello, close: closeProtocolError, end: "failed"})
		}
	}

	// 5.x: fragmentation.
	add(
		autobahnCase{id: "5.1", frames: []wsFrame{{op: opPing, payload: []byte("fragment1")}, continuation("fragment2", true)},
			close: closeProtocolError, end: "failed"},
		autobahnCase{id: "5.2", frames: []wsFrame{{op: opPong, payload: []byte("fragment1")}, continuation("fragment2", true)},
			close: closeProtocolError, end: "failed"},
	)
	for i, ch := range []chopping{oneChop, frameWise, octetWise} {
		add(
			autobahnCase{id: fmt.Sprintf("5.%d", 3+i), frames: []wsFrame{firstFragment("fragment1"), continuation("fragment2", true), normal},
				chops: []chopping{ch}, data: "fragment1fragment2", close: closeNormal, end: "eof"},
			autobahnCase{id: fmt.Sprintf("5.%d", 6+i), frames: []wsFrame{firstFragment("fragment1"), control(opPing, "ping payload"),
				continuation("fragment2", true), normal}, chops: []chopping{ch}, data: "fragment1fragment2",
				pongs: []string{"ping payload"}, close: closeNormal, end: "eof"},
			// Nothing to continue, with FIN set (5.9-5.11) or not (5.12-5.14).
			autobahnCase{id: fmt.Sprintf("5.%d", 9+i), frames: []wsFrame{continuation("non-continuation payload", true), dataFrame(hello)},
				chops: []chopping{ch}, close: closeProtocolError, end: "failed"},
			autobahnCase{id: fmt.Sprintf("5.%d", 12+i), frames: []wsFrame{continuation("non-continuation payload", false), dataFrame(hello)},
				chops: []chopping{ch}, close: closeProtocolError, end: "failed"},
		)
	}
	add(
		autobahnCase{id: "5.15", frames: []wsFrame{firstFragment("fragment1"), continuation("fragment2", true),
			continuation("fragment3", false), dataFrame("fragment4")}, chops: []chopping{oneChop},
			data: "fragment1fragment2", close: closeProtocolError, end: "failed"},
		autobahnCase{id: "5.16", frames: []wsFrame{continuation("fragment1", false), firstFragment("fragment2"), continuation("fragment3", true),
			continuation("fragment1", false), firstFragment("fragment2"), continuation("fragment3", true)},
			close: closeProtocolError, end: "failed"},
		autobahnCase{id: "5.17", frames: []wsFrame{continuation("fragment1", true), firstFragment("fragment2"), continuation("fragment3", true),
			continuation("fragment1", true), firstFragment("fragment2"), continuation("fragment3", true)},
			close: closeProtocolError, end: "failed"},
		// The first fragment's octets are part of the stream already when the second turns out to start a message.
		autobahnCase{id: "5.18", frames: []wsFrame{firstFragment("fragment1"), dataFrame("fragment2")}, chops: []chopping{oneChop},
			data: "fragment1", close: closeProtocolError, end: "failed"},
	)

	// 6.1.x: empty messages and fragments (as binary); 6.2.1 and 6.3.1 stand for the UTF-8 cases: text is refused
	// whatever it holds.
	add(
		autobahnCase{id: "6.1.1", frames: []wsFrame{dataFrame(""), normal}, close: closeNormal, end: "eof"},
		autobahnCase{id: "6.1.2", frames: []wsFrame{firstFragment(""), continuation("", false), continuation("", true), normal},
			close: closeNormal, end: "eof"},
		autobahnCase{id: "6.1.3", frames: []wsFrame{firstFragment(""), continuation("middle frame payload", false), continuation("", true), normal},
			data: "middle frame payload", close: closeNormal, end: "eof"},
		autobahnCase{id: "6.2.1", frames: []wsFrame{control(opText, "Hello-µ@ßöäüàá-UTF-8!!"), normal}, close: closeUnsupportedData, end: "failed"},
		autobahnCase{id: "6.3.1", frames: []wsFrame{control(opText, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), normal},
			close: closeUnsupportedData, end: "failed"},
	)

	// 7.x: the closing handshake. Nothing after the peer's Close is read or answered.
	add(
		autobahnCase{id: "7.1.1", frames: []wsFrame{dataFrame(hello), normal}, data: hello, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.1.2", frames: []wsFrame{normal, normal}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.1.3", frames: []wsFrame{normal, control(opPing, "ping after close")}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.1.4", frames: []wsFrame{normal, dataFrame("message after close")}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.1.5", frames: []wsFrame{firstFragment("fragment1"), normal, continuation("fragment2", true)},
			data: "fragment1", close: closeNormal, end: "eof"},
		autobahnCase{id: "7.1.6", frames: append(binaryOf(256<<10, 256<<10), normal, control(opPing, "ping after close")),
			chops: []chopping{oneChop, frameWise}, data: strings.Repeat("\xfe", 256<<10), close: closeNormal, end: "eof"},
		autobahnCase{id: "7.3.1", frames: []wsFrame{control(opClose, "")}, close: closeNoStatus, end: "eof"},
		autobahnCase{id: "7.3.2", frames: []wsFrame{control(opClose, "\x03")}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "7.3.3", frames: []wsFrame{normal}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.3.4", frames: []wsFrame{closeFrame(closeNormal, "Hello World!")}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.3.5", frames: []wsFrame{closeFrame(closeNormal, strings.Repeat("*", 123))}, close: closeNormal, end: "eof"},
		autobahnCase{id: "7.3.6", frames: []wsFrame{closeFrame(closeNormal, strings.Repeat("*", 124))}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "7.5.1", frames: []wsFrame{closeFrame(closeNormal, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")},
			close: closeProtocolError, end: "failed"},
	)
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		end := "peer"
		if code == 1000 || code == 1001 {
			end = "eof"
		}
		add(autobahnCase{id: fmt.Sprintf("7.7.%d", i+1), frames: []wsFrame{closeFrame(code, "")}, close: code, end: end})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999} {
		add(autobahnCase{id: fmt.Sprintf("7.9.%d", i+1), frames: []wsFrame{closeFrame(code, "")}, close: closeProtocolError, end: "failed"})
	}
	// The suite leaves 5000 and above to the implementation: they are not codes RFC 6455 defines, so they fail.
	add(
		autobahnCase{id: "7.13.1", frames: []wsFrame{closeFrame(5000, "")}, close: closeProtocolError, end: "failed"},
		autobahnCase{id: "7.13.2", frames: []wsFrame{closeFrame(65535, "")}, close: closeProtocolError, end: "failed"},
	)

	// 9.x: limits, as binary. The reader holds no buffer sized by the peer, whatever the frame's length.
	for i, n := range []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20} {
		add(autobahnCase{id: fmt.Sprintf("9.2.%d", i+1), frames: append(binaryOf(n, n), normal), chops: []chopping{frameWise},
			data: strings.Repeat("\xfe", n), close: closeNormal, end: "eof"})
	}
	for i, frag := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		add(autobahnCase{id: fmt.Sprintf("9.4.%d", i+1), frames: append(binaryOf(4<<20, frag), normal), chops: []chopping{oneChop},
			data: strings.Repeat("\xfe", 4<<20), close: closeNormal, end: "eof"})
	}
	for i, chop := range []int{64, 128, 256, 512, 1024, 2048} {
		add(autobahnCase{id: fmt.Sprintf("9.6.%d", i+1), frames: append(binaryOf(1<<20, 1<<20), normal),
			chops: []chopping{{fmt.Sprintf("%d octets", chop), chop}}, data: strings.Repeat("\xfe", 1<<20), close: closeNormal, end: "eof"})
	}

	// Rules of RFC 6455 the suite does not test from this side.
	add(
		autobahnCase{id: "RFC 6455 5.1 wrong masking", frames: []wsFrame{{fin: true, op: opBinary, payload: []byte(hello), wrongMask: true}},
			close: closeProtocolError, end: "failed"},
		autobahnCase{id: "RFC 6455 5.2 length with the top bit", frames: []wsFrame{dataFrame(hello)}, close: closeProtocolError, end: "failed"},
	)
	return cases
}

// runAutobahn feeds the frames to a wsConn (client tells which end it is), reads until Read fails, closes it as
// yamux would, and returns what it read, how Read ended, and the frames it sent.
func runAutobahn(t *testing.T, frames [][]byte, client bool) (data []byte, err error, ops []byte, payloads [][]byte) {
	t.Helper()
	w := &recorder{}
	c := newWSConn(struct {
		io.Reader
		io.Writer
		io.Closer
	}{&choppedReader{chops: frames}, w, io.NopCloser(nil)}, nil, client, nil, nil, time.Second)
	data, err = io.ReadAll(c)
	c.Close()
	ops, payloads = readFrames(t, w.all(), client)
	return data, err, ops, payloads
}

func TestAutobahnCases(t *testing.T) {
	for _, tc := range autobahnCases() {
		chops := tc.chops
		if chops == nil {
			chops = []chopping{oneChop, frameWise, octetWise}
		}
		for _, end := range []struct {
			name   string
			client bool
		}{{"server", false}, {"client", true}} {
			for _, ch := range chops {
				t.Run(tc.id+"/"+end.name+"/"+ch.name, func(t *testing.T) {
					var wire [][]byte
					for _, f := range tc.frames {
						wire = append(wire, f.encode(end.client))
					}
					if strings.Contains(tc.id, "top bit") {
						wire[0][1] = wire[0][1]&0x80 | 127
						wire[0] = append(wire[0][:2], append([]byte{0x80, 0, 0, 0, 0, 0, 0, 13}, wire[0][2:]...)...)
					}
					data, err, ops, payloads := runAutobahn(t, ch.chop(wire), end.client)
					if string(data) != tc.data {
						t.Errorf("read %d octets %.40q, want %d octets %.40q", len(data), data, len(tc.data), tc.data)
					}
					switch tc.end {
					case "eof":
						if err != nil {
							t.Errorf("Read ended with %v, want io.EOF (the peer's normal Close)", err)
						}
					case "failed":
						if !errors.Is(err, errProtocol) {
							t.Errorf("Read ended with %v, want a protocol error", err)
						}
					case "peer":
						if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("websocket closed by the peer: %d", tc.close)) {
							t.Errorf("Read ended with %v, want the peer's close code %d", err, tc.close)
						}
					}
					var pongs []string
					for i, op := range ops {
						if op == opPong {
							pongs = append(pongs, string(payloads[i]))
						}
					}
					if tc.latestPong {
						if len(pongs) == 0 || pongs[len(pongs)-1] != tc.pongs[len(tc.pongs)-1] {
							t.Errorf("pongs %q, want the last to answer %q", pongs, tc.pongs[len(tc.pongs)-1])
						}
					} else if fmt.Sprint(pongs) != fmt.Sprint(tc.pongs) {
						t.Errorf("pongs %q, want %q", pongs, tc.pongs)
					}
					if len(ops) == 0 || ops[len(ops)-1] != opClose || bytes.Count(ops, []byte{opClose}) != 1 {
						t.Fatalf("sent frames %v, want one Close, last", ops)
					}
					for _, op := range ops {
						if op != opPong && op != opClose {
							t.Errorf("sent a frame of opcode %d: only pongs and a Close were due", op)
						}
					}
					closing := payloads[len(payloads)-1]
					code := uint16(closeNoStatus)
					if len(closing) >= 2 {
						code = binary.BigEndian.Uint16(closing)
					}
					if code != tc.close {
						t.Errorf("sent Close %d %q, want %d", code, closing[min(2, len(closing)):], tc.close)
					}
				})
			}
		}
	}
}

// TestAutobahn5_19 is cases 5.19 and 5.20: a fragmented message with pings between its fragments, the second part
// sent only once the first ping was answered. The pongs go out while the message is still incomplete.
func TestAutobahn5_19(t *testing.T) {
	for _, client := range []bool{false, true} {
		t.Run(fmt.Sprintf("client=%v", client), func(t *testing.T) {
			pr, pw := io.Pipe()
			w := &recorder{}
			c := newWSConn(struct {
				io.Reader
				io.Writer
				io.Closer
			}{pr, w, pr}, nil, client, nil, nil, time.Second)
			read := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(c)
				read <- b
			}()
			send := func(fs ...wsFrame) {
				for _, f := range fs {
					if _, err := pw.Write(f.encode(client)); err != nil {
						t.Fatal(err)
					}
				}
			}
			waitPongs := func(n int) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for {
					ops, _ := readFrames(t, w.all(), client)
					if bytes.Count(ops, []byte{opPong}) >= n {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%d pongs answered, want %d before the message ends", bytes.Count(ops, []byte{opPong}), n)
					}
					time.Sleep(time.Millisecond)
				}
			}
			send(firstFragment("fragment1"), continuation("fragment2", false), control(opPing, "pongme 1!"))
			waitPongs(1)
			send(continuation("fragment3", false), continuation("fragment4", false), control(opPing, "pongme 2!"))
			waitPongs(2)
			send(continuation("fragment5", true), closeFrame(closeNormal, ""))
			if got := string(<-read); got != "fragment1fragment2fragment3fragment4fragment5" {
				t.Fatalf("read %q", got)
			}
			c.Close()
			ops, payloads := readFrames(t, w.all(), client)
			if fmt.Sprint(ops) != fmt.Sprint([]byte{opPong, opPong, opClose}) || string(payloads[0]) != "pongme 1!" || string(payloads[1]) != "pongme 2!" {
				t.Fatalf("sent %v %q, want the two pongs and a Close", ops, payloads)
			}
		})
	}
}

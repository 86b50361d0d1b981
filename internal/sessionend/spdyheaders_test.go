package sessionend

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/moby/spdystream/spdy"

	"github.com/warren-dev/warren/internal/streamframe"
)

// spdyHeaderWriter compresses header blocks as a SPDY/3 peer does: one zlib context for the whole session, with
// streamframe.SPDYDictionary, a sync flush at the end of each block. Unlike spdystream's framer it writes any block, however
// malformed or large.
type spdyHeaderWriter struct {
	block bytes.Buffer
	zw    *zlib.Writer
}

func newSPDYHeaderWriter(t testing.TB) *spdyHeaderWriter {
	w := &spdyHeaderWriter{}
	var err error
	if w.zw, err = zlib.NewWriterLevelDict(&w.block, zlib.BestCompression, []byte(streamframe.SPDYDictionary)); err != nil {
		t.Fatal(err)
	}
	return w
}

// synStream returns a SYN_STREAM frame whose header block inflates to raw (the count and the pairs, as given).
func (w *spdyHeaderWriter) synStream(t testing.TB, id uint32, raw ...[]byte) []byte {
	return w.control(t, streamframe.SPDYSynStream, id, raw...)
}

func (w *spdyHeaderWriter) control(t testing.TB, typ uint16, id uint32, raw ...[]byte) []byte {
	t.Helper()
	w.block.Reset()
	for _, p := range raw {
		if _, err := w.zw.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.zw.Flush(); err != nil {
		t.Fatal(err)
	}
	prefix := binary.BigEndian.AppendUint32(nil, id)
	if typ == streamframe.SPDYSynStream {
		prefix = append(prefix, 0, 0, 0, 0, 0, 0) // associated stream, priority, slot
	}
	f := binary.BigEndian.AppendUint32(nil, 0x80030000|uint32(typ))
	f = binary.BigEndian.AppendUint32(f, uint32(len(prefix)+w.block.Len()))
	return append(append(f, prefix...), w.block.Bytes()...)
}

// u32 and pair spell a raw header block: u32(count), then pair(name, value) for each header.
func u32(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

func pair(name, value string) []byte {
	b := append(u32(uint32(len(name))), name...)
	return append(append(b, u32(uint32(len(value)))...), value...)
}

// headerBomb is the review's finding: 24 values of 1 MiB of NULs (each NUL starts another value), about 24 KB
// compressed per frame.
func headerBomb(t testing.TB, w *spdyHeaderWriter, id uint32) []byte { return smallBomb(t, w, id, 24) }

// smallBomb is a bomb of n values of 1 MiB of NULs, quicker to compress.
func smallBomb(t testing.TB, w *spdyHeaderWriter, id uint32, n int) []byte {
	raw := [][]byte{u32(uint32(n))}
	nuls := make([]byte, 1<<20)
	for i := range n {
		raw = append(raw, u32(3), fmt.Appendf(nil, "x%02d", i), u32(uint32(len(nuls))), nuls)
	}
	return w.synStream(t, id, raw...)
}

// allocated returns the bytes allocated while f runs (in this goroutine or any other).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestSPDYHeaderBomb: header blocks that inflate past a bound make the gateway stop following the session (no
// farewell) with bounded memory, whatever the inflated size. Before the bounds, the first case allocated 7.3 GiB.
func TestSPDYHeaderBomb(t *testing.T) {
	for _, c := range []struct {
		name   string
		frames func(t testing.TB, w *spdyHeaderWriter) [][]byte
		last   bool // only the last frame goes past a bound; by default the first does
	}{
		{"24 MiB of NULs in 24 values, three frames", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			return [][]byte{headerBomb(t, w, 1), headerBomb(t, w, 3), headerBomb(t, w, 5)}
		}, false},
		{"nothing past the bounds (the control case)", nil, false},
		{"four billion headers", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			return [][]byte{w.synStream(t, 1, u32(1<<32-1), bytes.Repeat(pair("a", "b"), 1000))}
		}, false},
		{"a 2 MiB name", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			return [][]byte{w.synStream(t, 1, u32(1), u32(2<<20), make([]byte, 2<<20))}
		}, false},
		{"a 2 KiB value", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			return [][]byte{w.synStream(t, 1, u32(1), pair("streamtype", "error"+strings.Repeat("\x00", 2<<10)))}
		}, false},
		{"a block over 8 KiB", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			raw := [][]byte{u32(9)}
			for i := range 9 {
				raw = append(raw, pair(fmt.Sprint("h", i), strings.Repeat("\x00", 1000)))
			}
			return [][]byte{w.synStream(t, 1, raw...)}
		}, false},
		{"4 MiB over a session, in blocks within bounds", func(t testing.TB, w *spdyHeaderWriter) [][]byte {
			raw := [][]byte{u32(8)}
			for i := range 8 {
				raw = append(raw, pair(fmt.Sprint("h", i), strings.Repeat("\x00", 1000)))
			}
			const block = 4 + 8*(4+2+4+1000) // inflated bytes of each
			var frames [][]byte
			for i := range streamframe.MaxSPDYSessionHeaders/block + 1 {
				frames = append(frames, w.synStream(t, uint32(2*i+1), raw...))
			}
			return frames
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newSPDYHeaderWriter(t)
			// The client has opened an error stream first (in the same compression context): were the session
			// followed, it would get a farewell.
			opening := append(w.synStream(t, 1, u32(3), pair("streamtype", "error"), pair("port", "80"), pair("requestid", "0")),
				0, 0, 0, 1, 1, 0, 0, 0) // and closed it for writing (DATA with FIN)
			var frames [][]byte
			if c.frames != nil {
				frames = c.frames(t, w)
			}
			f := newSPDYFraming(true, func() string { return "portforward.k8s.io" })
			lostAt := -1
			n := allocated(func() {
				f.fromClient(opening)
				for i, fr := range frames {
					feedSplit(f.fromClient, fr, 4096)
					if f.in.Lost() && lostAt < 0 {
						lostAt = i
					}
				}
			})
			if c.frames == nil {
				if f.in.Lost() || f.farewell(maxLengthEnd) == nil {
					t.Fatalf("an ordinary session: lost %v, no farewell", f.in.Lost())
				}
				return
			}
			want := 0
			if c.last {
				want = len(frames) - 1
			}
			if lostAt != want {
				t.Errorf("the gateway stopped following the session at frame %d, want %d", lostAt, want)
			}
			if last := f.farewell(maxLengthEnd); last != nil {
				t.Errorf("farewell %x, want none", last)
			}
			if n > 1<<20 {
				t.Errorf("following %d frames allocated %d bytes, want at most 1 MiB", len(frames), n)
			}
		})
	}
}

// TestSPDYHeadersBeforeABound: a session whose blocks stay within the bounds is followed to its end, across
// SYN_STREAM, SYN_REPLY and HEADERS frames in one compression context, and after a bomb nothing is kept.
func TestSPDYHeadersBeforeABound(t *testing.T) {
	w := newSPDYHeaderWriter(t)
	raw := [][]byte{u32(streamframe.MaxSPDYHeaders)}
	for i := range streamframe.MaxSPDYHeaders - 1 {
		raw = append(raw, pair(fmt.Sprint("h", i), strings.Repeat("v", 100)))
	}
	raw = append(raw, pair("streamtype", "error\x00ignored"))
	var client []byte
	client = append(client, w.synStream(t, 1, raw...)...)
	client = append(client, w.control(t, streamframe.SPDYHeadersFrame, 1, u32(1), pair("a", strings.Repeat("\x00", streamframe.MaxSPDYHeaderField)))...)
	client = append(client, w.control(t, streamframe.SPDYSynReply, 2, u32(0))...)
	client = append(client, w.synStream(t, 3, u32(2), pair("streamtype", "data"), pair("streamtype", "error"))...) // the first value counts
	client = append(client, w.synStream(t, 5, u32(1), pair("streamtype", "error"))...)
	f := newSPDYFraming(true, func() string { return "portforward.k8s.io" })
	feedSplit(f.fromClient, client, 5)
	if f.in.Lost() || f.headers == nil {
		t.Fatalf("session lost within the bounds")
	}
	if len(f.errorStreams) != 2 || !f.errorStreams[1] || !f.errorStreams[5] {
		t.Fatalf("error streams %v, want 1 and 5", f.errorStreams)
	}
	f.fromClient(smallBomb(t, w, 7, 2))
	if !f.in.Lost() || f.headers != nil {
		t.Errorf("after a bomb: lost %v, inflater kept %v", f.in.Lost(), f.headers != nil)
	}
}

// TestSPDYHeadersSpdystreamInterop: the gateway reads header blocks exactly as spdystream's framer (client-go's and
// the API server's) writes them, values with several parts included.
func TestSPDYHeadersSpdystreamInterop(t *testing.T) {
	wire := newSPDYWire(t)
	want := map[uint32]bool{}
	for i := range 200 {
		id := uint32(2*i + 1)
		kind := []string{"data", "error", "stdin", "resize"}[i%4]
		h := http.Header{"Streamtype": {kind}, "Port": {fmt.Sprint(8000 + i)}, "Requestid": {fmt.Sprint(i)},
			"X-Multi": {"a", "b", strings.Repeat("c", i)}}
		wire.frame(t, &spdy.SynStreamFrame{StreamId: spdy.StreamId(id), Headers: h})
		if i%3 == 0 {
			wire.frame(t, &spdy.HeadersFrame{StreamId: spdy.StreamId(id), Headers: http.Header{"X-Later": {fmt.Sprint(i)}}})
		}
		if kind == "error" {
			want[id] = true
		}
	}
	f := newSPDYFraming(true, func() string { return "portforward.k8s.io" })
	feedSplit(f.fromClient, wire.buf.Bytes(), 1000)
	if f.in.Lost() || len(f.errorStreams) != len(want) {
		t.Fatalf("lost %v, %d error streams, want %d", f.in.Lost(), len(f.errorStreams), len(want))
	}
	for id := range want {
		if !f.errorStreams[id] {
			t.Errorf("error stream %d not seen", id)
		}
	}
}

// TestSPDYBombThroughTheConn: through the hijacked connection, a bomb leaves the session's bytes untouched, and the
// gateway writes no farewell when it ends the session.
func TestSPDYBombThroughTheConn(t *testing.T) {
	callerSide, gatewaySide := net.Pipe()
	defer callerSide.Close()
	end := func() *End { return maxLengthEnd }
	conn := &reasonConn{Conn: gatewaySide, framing: newSPDYFraming(false, func() string { return "v4.channel.k8s.io" }), end: end}
	w := newSPDYHeaderWriter(t)
	sent := append(smallBomb(t, w, 1, 2), w.synStream(t, 3, u32(1), pair("streamtype", "error"))...)
	var wg sync.WaitGroup
	wg.Go(func() { callerSide.Write(sent) })
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, sent) {
		t.Fatalf("the server side read %d bytes (%v), not what the caller sent", len(got), err)
	}
	wg.Wait()
	var farewell bytes.Buffer
	wg.Go(func() { io.Copy(&farewell, callerSide) })
	conn.Close()
	wg.Wait()
	if farewell.Len() != 0 {
		t.Errorf("the caller got %x after the session, want nothing", farewell.Bytes())
	}
}

// BenchmarkSPDYHeaderBomb reports what one bomb frame costs the gateway (B/op), and what spdystream's own framer
// would cost with its header count and field size options set to the gateway's bounds (the reason the gateway
// inflates header blocks itself).
func BenchmarkSPDYHeaderBomb(b *testing.B) {
	b.Run("gateway", func(b *testing.B) {
		w := newSPDYHeaderWriter(b)
		frame := headerBomb(b, w, 1)
		b.ReportAllocs()
		for b.Loop() {
			f := newSPDYFraming(true, func() string { return "" })
			f.fromClient(frame)
			if !f.in.Lost() {
				b.Fatal("not lost")
			}
		}
	})
	b.Run("spdystream-framer-with-bounds", func(b *testing.B) {
		// About the largest block within the bounds: 8 values of 1000 NULs.
		w := newSPDYHeaderWriter(b)
		raw := [][]byte{u32(8)}
		for i := range 8 {
			raw = append(raw, pair(fmt.Sprint("h", i), strings.Repeat("\x00", 1000)))
		}
		frame := w.synStream(b, 1, raw...)
		b.ReportMetric(float64(len(frame)), "frame-bytes")
		b.ReportAllocs()
		for b.Loop() {
			fr, _ := spdy.NewFramerWithOptions(nil, bytes.NewReader(frame),
				spdy.WithMaxHeaderCount(streamframe.MaxSPDYHeaders), spdy.WithMaxHeaderFieldSize(streamframe.MaxSPDYHeaderField))
			if _, err := fr.ReadFrame(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("gateway-same-block", func(b *testing.B) {
		// The same blocks, one after the other in one session (the inflater made once per session, as in a real
		// one); a session is replayed from its start before it reaches the session's bound.
		w := newSPDYHeaderWriter(b)
		raw := [][]byte{u32(8)}
		for i := range 8 {
			raw = append(raw, pair(fmt.Sprint("h", i), strings.Repeat("\x00", 1000)))
		}
		const perSession = 400 // 400 blocks of ~8 KiB: under streamframe.MaxSPDYSessionHeaders
		frames := make([][]byte, perSession)
		for i := range frames {
			frames[i] = w.synStream(b, uint32(2*i+1), raw...)
		}
		var f *spdyFraming
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%perSession == 0 {
				f = newSPDYFraming(true, func() string { return "" })
			}
			f.fromClient(frames[i%perSession])
			if f.in.Lost() {
				b.Fatal("lost")
			}
		}
	})
}

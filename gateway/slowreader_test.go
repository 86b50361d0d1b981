package gateway_test

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// stalledGet sends GET path through the gateway on a raw connection and returns it unread; its receive buffer is
// small, so that the gateway's writes block soon once nobody reads. (Reading it makes no sense: with a receive
// buffer below the loopback MSS, TCP advertises no window until the reader has drained half the buffer, and
// crawls on zero-window probes.)
func (e *proxyEnv) stalledGet(t testing.TB, token, path string) net.Conn {
	t.Helper()
	conn := e.rawGet(t, token, path)
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	return conn
}

// rawGet sends GET path through the gateway on a raw connection of its own and returns it.
func (e *proxyEnv) rawGet(t testing.TB, token, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", e.gwSrv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /clusters/%s%s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n\r\n", cluster, path, token)
	return conn
}

// TestIdleWriteTimeoutEndsStalledRequests (on loopback, with real time: not in a synctest bubble, where it hangs.
// httputil.ReverseProxy's flush timer writes under its writer's mutex; blocked there on a caller who reads nothing,
// it leaves the copy loop waiting on that mutex, which synctest does not count as durably blocked, so the bubble's
// clock never reaches the deadline): a caller that stops reading a large answer (any valid token may GET
// /openapi/v2) or an exec session's output loses its request after the idle write timeout, instead of holding it,
// and what the tunnel buffered for it, for as long as it likes. The audit record says why. On the old code there
// was no write deadline towards callers: the requests stayed open until the test gave up.
func TestIdleWriteTimeoutEndsStalledRequests(t *testing.T) {
	const idle = 500 * time.Millisecond
	api := newFakeAPI(t)
	api.execFlood = true
	e := newProxyEnv(t, proxyEnvOpts{api: api, idleWrite: idle})
	tok, _ := e.token(time.Hour)
	note := fmt.Sprintf("ended: the caller read nothing for %v (idle write timeout)", idle)

	start := time.Now()
	e.stalledGet(t, tok, "/openapi/v2")
	rec := waitRecord(t, e.gwAudit, "stalled /openapi/v2", func(r audit.Record) bool { return r.Path == "/clusters/prod/openapi/v2" })
	t.Logf("stalled GET /openapi/v2 ended after %v (%d bytes out), idle write timeout %v", time.Since(start).Round(time.Millisecond), rec.BytesOut, idle)
	if rec.Reason != note || rec.Decision != audit.DecisionAllow {
		t.Fatalf("record %+v, want reason %q", rec, note)
	}
	if sent := api.openAPISent.Load(); sent >= api.openAPIBytes {
		t.Fatalf("the API server wrote all %d bytes: nothing stalled", sent)
	}

	exec := e.openExec(tok) // reads the first frame, then nothing more
	start = time.Now()
	rec = waitRecord(t, e.gwAudit, "stalled exec", func(r audit.Record) bool { return strings.HasSuffix(r.Path, "/exec?command=sh&stdout=true") })
	t.Logf("stalled exec ended after %v (%d bytes out)", time.Since(start).Round(time.Millisecond), rec.BytesOut)
	if rec.Reason != note {
		t.Fatalf("exec record reason %q, want %q", rec.Reason, note)
	}
	exec.conn.Close()
	wait.Until(t, 10*time.Second, "the API server's side of the exec ends", func() bool { return api.streams.Load() == 0 })

	// A reader that keeps reading, however slowly, keeps its request: each chunk gets the timeout afresh. (A timeout
	// of 2 s here, so that a loaded machine's scheduling does not pass for a stalled reader: a 32 KiB chunk takes
	// 400 ms at this pace.)
	const slowIdle = 2 * time.Second
	slow := newFakeAPI(t)
	slow.openAPIBytes = 256 << 10
	e2 := newProxyEnv(t, proxyEnvOpts{api: slow, idleWrite: slowIdle})
	tok2, _ := e2.token(time.Hour)
	resp, err := e2.get(tok2, "/openapi/v2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 16<<10)
	total := 0
	for {
		n, err := resp.Body.Read(buf)
		total += n
		if err != nil {
			if total != int(slow.openAPIBytes) {
				t.Fatalf("slow reader got %d of %d bytes: %v", total, slow.openAPIBytes, err)
			}
			break
		}
		time.Sleep(200 * time.Millisecond) // 16 KiB per 200 ms: the whole answer takes 3.2 s, more than a timeout
	}
}

// BenchmarkStalledReaders measures what callers that stopped reading cost the gateway (and, in this process, the
// connector and the API stand-in): 16 callers on one tunnel each ask for a 64 MiB /openapi/v2 and read nothing
// ("never-read"), or read its first 32 MiB as fast as it comes and then stop ("read-then-stall", which grows the
// stream's window as far as the tunnel lets it); once the stand-in's writes have stopped for half a second, the heap
// in use is read after a collection. Reported: MiB of heap in use per stalled reader, and MiB the stand-in managed
// to write per reader (kernel socket buffers included).
//
//	go test ./gateway -run '^$' -bench StalledReaders -benchtime 1x
func BenchmarkStalledReaders(b *testing.B) {
	for _, c := range []struct {
		name      string
		readFirst int64
	}{{"never-read", 0}, {"read-then-stall", 32 << 20}} {
		b.Run(c.name, func(b *testing.B) {
			const readers = 16
			for b.Loop() {
				api := newFakeAPI(b)
				e := newProxyEnv(b, proxyEnvOpts{api: api, idleWrite: time.Hour})
				tok, _ := e.token(time.Hour)
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				for range readers {
					if c.readFirst == 0 {
						e.stalledGet(b, tok, "/openapi/v2")
						continue
					}
					if _, err := io.CopyN(io.Discard, e.rawGet(b, tok, "/openapi/v2"), c.readFirst); err != nil {
						b.Fatal(err)
					}
				}
				last, since := int64(-1), time.Now()
				for time.Since(since) < 500*time.Millisecond {
					if s := api.openAPISent.Load(); s != last {
						last, since = s, time.Now()
					}
					time.Sleep(20 * time.Millisecond)
				}
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				b.ReportMetric((float64(after.HeapInuse)-float64(before.HeapInuse))/readers/(1<<20), "heap-MiB/reader")
				b.ReportMetric(float64(last-c.readFirst*readers)/readers/(1<<20), "unread-MiB/reader")
			}
		})
	}
}

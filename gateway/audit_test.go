package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/warren-dev/warren/audit"
)

// disk is an audit log's file that fails every write while full, as a full disk does, or blocks every write while
// stuck, as standard output piped to a process that stopped reading does.
type disk struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	full  bool
	stuck chan struct{} // non-nil: writes wait for it to close
}

func (d *disk) Write(p []byte) (int, error) {
	d.mu.Lock()
	stuck := d.stuck
	d.mu.Unlock()
	if stuck != nil {
		<-stuck
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.full {
		return 0, errors.New("no space left on device")
	}
	return d.buf.Write(p)
}

func (d *disk) set(f func(d *disk)) { d.mu.Lock(); f(d); d.mu.Unlock() }

// records returns the lines of the log as generic JSON objects.
func (d *disk) records(t *testing.T) []map[string]any {
	t.Helper()
	d.mu.Lock()
	data := bytes.Clone(d.buf.Bytes())
	d.mu.Unlock()
	if _, err := audit.Verify(bytes.NewReader(data)); err != nil {
		t.Fatalf("the audit log does not verify: %v", err)
	}
	var out []map[string]any
	for _, ln := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		if len(ln) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(ln, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestGatewayRefusesWhatItCannotAudit: while the audit log fails, API requests get 503 and /readyz says why (fail
// closed), unless ServeWithoutAudit; /healthz stays up.
func TestGatewayRefusesWhatItCannotAudit(t *testing.T) {
	k := newTestKeys(t)
	token := k.callerToken(t, "alice", "prod", "get,list:pods")
	for _, serve := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeWithoutAudit=%v", serve), func(t *testing.T) {
			d := &disk{full: true}
			log := audit.New(d)
			g := newTestGateway(t, k, func(c *Config) { c.Audit, c.ServeWithoutAudit = log, serve })
			log.Write(audit.Record{}) // the first write finds the disk full
			code, msg, h := call(g, "GET", "/clusters/prod/api/v1/namespaces/payments/pods", token)
			if !serve {
				want := "the gateway cannot write its audit log (audit log write failed: no space left on device (1 records lost since)); it refuses requests until it can"
				if code != http.StatusServiceUnavailable || msg != want || h.Get("Retry-After") != "5" {
					t.Errorf("API request: %d %q, want 503 %q", code, msg, want)
				}
			} else if code != http.StatusServiceUnavailable || msg != `no connector is connected for cluster "prod": check that its connector runs and reaches the gateway` {
				t.Errorf("API request served without audit: %d %q", code, msg)
			}
			code, msg, _ = call(g, "GET", "/readyz", "")
			wantReady := "the audit log cannot be written (audit log write failed: no space left on device (2 records lost since)): API requests are refused until it can"
			if serve {
				wantReady = "ok, but the audit log cannot be written (audit log write failed: no space left on device (2 records lost since)): serving without audit (ServeWithoutAudit)\n"
			}
			if wantCode := map[bool]int{false: 503, true: 200}[serve]; code != wantCode || msg != wantReady {
				t.Errorf("/readyz: %d %q, want %d %q", code, msg, wantCode, wantReady)
			}
			if code, msg, _ := call(g, "GET", "/healthz", ""); code != 200 || msg != "ok\n" {
				t.Errorf("/healthz: %d %q", code, msg)
			}
			d.set(func(d *disk) { d.full = false })
			call(g, "GET", "/clusters/prod/api/v1/namespaces/payments/pods", token) // its record clears the failure
			if code, msg, _ := call(g, "GET", "/readyz", ""); code != 200 || msg != "ok\n" {
				t.Errorf("/readyz once the disk has room: %d %q", code, msg)
			}
		})
	}
}

// TestGatewayAuditStall: a stalled audit writer (standard output piped to a stuck process) holds at most the
// requests already writing, and only for the log's WriteTimeout; then /readyz says so and requests get 503 at once.
func TestGatewayAuditStall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := newTestKeys(t)
		token := k.callerToken(t, "alice", "prod", "get,list:pods")
		d := &disk{stuck: make(chan struct{})}
		log, err := audit.NewWithConfig(d, audit.Config{WriteTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		g := newTestGateway(t, k, func(c *Config) { c.Audit = log })
		done := make(chan struct{})
		go func() { // answered 503 (no connector), then stuck writing its record
			call(g, "GET", "/clusters/prod/api/v1/namespaces/payments/pods", token)
			close(done)
		}()
		synctest.Wait()
		time.Sleep(6 * time.Second)
		code, msg, _ := call(g, "GET", "/readyz", "")
		if want := "the audit log cannot be written (audit log stalled: a write has not completed for 6s (0 records waiting, 0 dropped)): API requests are refused until it can"; code != 503 || msg != want {
			t.Errorf("/readyz: %d %q, want 503 %q", code, msg, want)
		}
		start := time.Now()
		code, msg, _ = call(g, "GET", "/clusters/prod/api/v1/namespaces/payments/pods", token)
		if code != 503 || !strings.HasPrefix(msg, "the gateway cannot write its audit log (audit log stalled: a write has not completed for 6s") || time.Since(start) != 0 {
			t.Errorf("API request while stalled: %d %q after %v, want 503 at once", code, msg, time.Since(start))
		}
		close(d.stuck)
		d.set(func(d *disk) { d.stuck = nil })
		<-done
		if code, _, _ := call(g, "GET", "/readyz", ""); code != 200 {
			t.Errorf("/readyz once the writer moved: %d", code)
		}
		call(g, "GET", "/clusters/prod/api/v1/namespaces/payments/pods", token)
		g.Close()
		recs := d.records(t)
		if len(recs) != 3 || recs[0]["status"] != 503.0 || fmt.Sprint(recs[1]["lost"]) != "map[reason:audit log stalled: a write has not completed for over 5s records:1]" ||
			recs[2]["status"] != 503.0 {
			t.Errorf("log: %v", recs)
		}
	})
}

// TestRefusalsAggregatedPerSource: each source gets Burst records of refusals, then its refusals are counted into
// one summary; authenticated callers have a budget per token (AuthenticatedBurst); unauthenticated records are
// clipped hard.
func TestRefusalsAggregatedPerSource(t *testing.T) {
	k := newTestKeys(t)
	d := &disk{}
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := newTestGateway(t, k, func(c *Config) {
		c.Audit = audit.New(d)
		c.RefusalAudit = RefusalAuditConfig{Rate: 0.001, Burst: 3, AuthenticatedRate: 0.001, AuthenticatedBurst: 3, Now: func() time.Time { return clock }}
	})
	from := func(addr string) func(*http.Request) { return func(r *http.Request) { r.RemoteAddr = addr } }
	for i := range 10 {
		call(g, "GET", "/clusters/prod/api/v1/pods", "", from("10.0.0.1:40000"))
		if i < 3 {
			call(g, "GET", fmt.Sprintf("/clusters/nope-%d/api", i), "", from("[2001:db8::1]:443"), func(r *http.Request) {
				r.Header.Set("User-Agent", strings.Repeat("\xff", 60<<10))
			})
		}
	}
	// IPv6 is counted per /64: another address of it shares the budget.
	call(g, "GET", "/clusters/prod/api/v1/pods", "", from("[2001:db8::2]:443"))
	alice := k.callerToken(t, "alice", "prod", "get:pods")
	bob := k.callerToken(t, "bob", "prod", "get:pods")
	for range 5 {
		call(g, "GET", "/clusters/prod/api/v1/secrets", alice, from("10.0.0.1:40001"))
	}
	call(g, "GET", "/clusters/prod/api/v1/secrets", bob, from("10.0.0.1:40002"))
	g.Close()

	recs := d.records(t)
	var individual []string
	summaries := map[string]map[string]any{}
	for _, r := range recs {
		who := fmt.Sprint(r["sourceIP"], "/", r["subject"])
		if r["suppressed"] != nil {
			summaries[who] = r
			continue
		}
		individual = append(individual, fmt.Sprint(who, " ", r["status"]))
	}
	want := []string{"10.0.0.1/<nil> 401", "2001:db8::1/<nil> 401", "10.0.0.1/<nil> 401", "2001:db8::1/<nil> 401", "10.0.0.1/<nil> 401", "2001:db8::1/<nil> 401",
		"10.0.0.1/alice 403", "10.0.0.1/alice 403", "10.0.0.1/alice 403", "10.0.0.1/bob 403"}
	if fmt.Sprint(individual) != fmt.Sprint(want) {
		t.Errorf("records written one by one:\n %v\nwant\n %v", individual, want)
	}
	for who, want := range map[string]string{
		"10.0.0.1/<nil>":      "7 map[401:7]",
		"2001:db8::/64/<nil>": "1 map[401:1]",
		"10.0.0.1/alice":      "2 map[403:2]",
	} {
		s, _ := summaries[who]["suppressed"].(map[string]any)
		if got := fmt.Sprint(s["count"], " ", s["statuses"]); got != want || s["since"] == nil || s["until"] == nil {
			t.Errorf("summary of %s: %v, want %s", who, s, want)
		}
	}
	if r := summaries["10.0.0.1/<nil>"]; r["reason"] != "7 refusals from 10.0.0.1 not recorded one by one (over 0.001 a second): 401 ×7" || r["status"] != 401.0 {
		t.Errorf("summary record: %v", r)
	}
	if r := summaries["10.0.0.1/alice"]; r["tokenID"] == nil || r["cluster"] != "prod" {
		t.Errorf("a token's summary names it: %v", r)
	}
	if len(summaries) != 3 {
		t.Errorf("%d summaries, want 3: %v", len(summaries), summaries)
	}
	// The unauthenticated caller's 60 KiB User-Agent was clipped to 4 KiB of JSON.
	for _, r := range recs {
		if ua, _ := r["userAgent"].(string); r["sourceIP"] == "2001:db8::1" {
			if utf8.RuneCountInString(ua) != (4<<10)/6 || fmt.Sprint(r["truncated"]) != "map[userAgent:61440]" {
				t.Errorf("unauthenticated user agent: %d runes, truncated %v", utf8.RuneCountInString(ua), r["truncated"])
			}
		}
	}
}

// TestRefusalsBeyondMaxSources: sources past MaxSources, and refusals past the global budget, are counted too.
func TestRefusalsBeyondMaxSources(t *testing.T) {
	k := newTestKeys(t)
	d := &disk{}
	g := newTestGateway(t, k, func(c *Config) {
		c.Audit = audit.New(d)
		c.RefusalAudit = RefusalAuditConfig{Rate: 0.001, Burst: 1, GlobalRate: 0.001, GlobalBurst: 4, MaxSources: 3}
	})
	for i := range 10 {
		call(g, "GET", "/clusters/prod/api", "", func(r *http.Request) { r.RemoteAddr = fmt.Sprintf("10.1.0.%d:1", i) })
	}
	g.Close()
	recs := d.records(t)
	var one, counted int
	for _, r := range recs {
		if s, ok := r["suppressed"].(map[string]any); ok {
			counted += int(s["count"].(float64))
			if r["sourceIP"] != "*" {
				t.Errorf("summary for %v, want only the overflow", r["sourceIP"])
			}
		} else {
			one++
		}
	}
	if one != 3 || counted != 7 {
		t.Errorf("%d written one by one and %d counted, want 3 (MaxSources, each within its burst) and 7", one, counted)
	}
}

package connector

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/wire"
)

// diskWriter is an audit log's file: it fails every write while full, as a full disk does (ENOSPC).
type diskWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	full bool
}

func (d *diskWriter) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.full {
		return 0, errors.New("no space left on device")
	}
	return d.buf.Write(p)
}

func (d *diskWriter) setFull(full bool) { d.mu.Lock(); d.full = full; d.mu.Unlock() }

// auditedConnector is a Connector with an audit log whose upstream answers 200 and counts what reaches it. sign
// adds to a request the gateway's assertion of it, for the tunnel the handler serves.
func auditedConnector(t *testing.T, log *audit.Log) (h http.Handler, served *int, sign func(*http.Request) *http.Request) {
	served = new(int)
	key := newGatewayKey(t)
	c := bareConnector(t, key, Config{Audit: log})
	const tunnelID = "a0d17a0d17a0d17a0d17a0d17a0d17a0"
	h = c.authorize(tunnelID, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*served++
		io.WriteString(w, "ok")
	}))
	sign = func(r *http.Request) *http.Request {
		if r.Header.Get(wire.HeaderRequestID) == "" {
			r.Header.Set(wire.HeaderRequestID, fmt.Sprintf("req-%d", time.Now().UnixNano()))
		}
		who := caller("*:*:*")
		who.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Hour))
		tok, err := key.key.SignAssertion(auth.AssertionOptions{Caller: who, Cluster: "prod", Session: tunnelID,
			Request: auth.RequestBinding(r, r.Header.Get(wire.HeaderRequestID))})
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(wire.HeaderAssertion, tok)
		return r
	}
	return h, served, sign
}

// bareConnector is a Connector of cluster prod pinning key, without a tunnel: tests call its authorize directly.
func bareConnector(t *testing.T, key gatewayKey, cfg Config) *Connector {
	ks, err := auth.NewStaticKeys(key.key.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewAssertionVerifier(auth.AssertionVerifierConfig{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return &Connector{cfg: cfg, cluster: "prod", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		assertions: v, replays: auth.NewReplayCache(0), now: time.Now}
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func status(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var st struct{ Message string }
	json.Unmarshal(rec.Body.Bytes(), &st)
	return st.Message
}

// TestConnectorRefusesWhatItCannotAudit: with its audit log failing (a full disk), the connector answers 503 and
// serves nothing; once the log takes records again, the refusal that found it so is recorded with the loss, and
// requests are served.
func TestConnectorRefusesWhatItCannotAudit(t *testing.T) {
	disk := &diskWriter{}
	log := audit.New(disk)
	h, served, sign := auditedConnector(t, log)
	get := func() *http.Request { return sign(httptest.NewRequest("GET", "/api/v1/namespaces/payments/pods", nil)) }

	if rec := serve(h, get()); rec.Code != 200 || *served != 1 {
		t.Fatalf("healthy log: %d, served %d", rec.Code, *served)
	}
	disk.setFull(true)
	serve(h, get())                    // served; its record is lost, and the log knows it
	for lost := 1; lost <= 3; lost++ { // each refusal's own record is lost too
		rec := serve(h, get())
		want := fmt.Sprintf("connector: cannot write its audit log (audit log write failed: no space left on device (%d records lost since)); it refuses requests until it can", lost)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "5" || status(t, rec) != want {
			t.Fatalf("full disk: %d %q, want 503 %q", rec.Code, status(t, rec), want)
		}
	}
	if *served != 2 {
		t.Fatalf("served %d requests while the log failed, want none after the failure was known", *served-1)
	}
	disk.setFull(false)
	// The first request after recovery is refused still (the log learns it recovered by writing its record).
	if rec := serve(h, get()); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("first request after recovery: %d", rec.Code)
	}
	if rec := serve(h, get()); rec.Code != 200 || *served != 3 {
		t.Fatalf("after recovery: %d, served %d", rec.Code, *served)
	}
	out := disk.buf.String()
	if n, err := audit.Verify(strings.NewReader(out)); err != nil || n != 4 {
		t.Fatalf("Verify = %d, %v:\n%s", n, err, out)
	}
	ls := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(ls[1], `"lost":{"records":4,`) || !strings.Contains(ls[2], `"decision":"deny","reason":"cannot write its audit log (audit log write failed`) ||
		!strings.Contains(ls[3], `"decision":"allow","status":200`) {
		t.Errorf("log:\n%s", out)
	}
}

// TestConnectorAuditsAHugeHeader: a 700 KiB header (a compromised gateway blinding the connector's audit: the record
// was over the 4 MiB line bound and dropped while the request was served) is recorded, clipped, and says so.
func TestConnectorAuditsAHugeHeader(t *testing.T) {
	disk := &diskWriter{}
	h, served, sign := auditedConnector(t, audit.New(disk))
	r := httptest.NewRequest("GET", "/api/v1/namespaces/payments/secrets", nil)
	r.Header.Set("User-Agent", strings.Repeat("\xff", 700<<10))
	r.Header.Set(wire.HeaderRequestID, "req-huge")
	if rec := serve(h, sign(r)); rec.Code != 200 || *served != 1 {
		t.Fatalf("%d, served %d", rec.Code, *served)
	}
	line := disk.buf.Bytes()
	var got audit.Record
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("no record: %v (%q)", err, line)
	}
	if got.RequestID != "req-huge" || got.Path != "/api/v1/namespaces/payments/secrets" || got.Truncated["userAgent"] != 700<<10 ||
		len(got.Truncated) != 1 || got.UserAgent != strings.Repeat("\ufffd", audit.MaxFieldBytes/6) {
		t.Errorf("record: id %q path %q truncated %v, %d bytes of user agent", got.RequestID, got.Path, got.Truncated, len(got.UserAgent))
	}
}

// TestRefusalClosesTheStream: a refused request whose body never comes (a gateway holding the connector's
// goroutines) gets its answer and loses its stream within the refusal timeout.
func TestRefusalClosesTheStream(t *testing.T) {
	c := bareConnector(t, newGatewayKey(t), Config{})
	s := httptest.NewServer(c.authorize("a0d17a0d17a0d17a0d17a0d17a0d17a0", http.NotFoundHandler()))
	defer s.Close()
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /api/v1/namespaces/x/configmaps HTTP/1.1\r\nHost: c\r\nContent-Length: 100\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.ReadAll(resp.Body) // until the connection closes: the answer has no length
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Fatalf("%d, close %v; want 401 and Connection: close", resp.StatusCode, resp.Close)
	}
	if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
		t.Fatalf("after the refusal: %q, %v; want the connection closed", rest, err)
	}
}

package gateway_test

// What happens to requests when a connector leaves, in-process: a connector that drains (SIGTERM: its Run's context
// ends), one whose connection is cut mid-request (a read goes to the cluster's other connector, a write is answered
// 502), an exec whose connector is lost, and streams that reach the maximum stream length.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
)

// holdingAPI is an API server stand-in that answers with its name; with hold, it holds GETs of .../pods/hold and
// every POST until release is closed (or the request goes away).
type holdingAPI struct {
	srv     *httptest.Server
	name    string
	hold    bool
	release chan struct{}
	held    atomic.Int64 // requests held now
	gets    atomic.Int64
	posts   atomic.Int64
}

func newHoldingAPI(t *testing.T, name string, hold bool) *holdingAPI {
	a := &holdingAPI{name: name, hold: hold, release: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			a.posts.Add(1)
			io.Copy(io.Discard, r.Body)
		} else {
			a.gets.Add(1)
		}
		if a.hold && (r.Method == http.MethodPost || strings.HasSuffix(r.URL.Path, "/pods/hold")) {
			a.held.Add(1)
			defer a.held.Add(-1)
			select {
			case <-a.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[],"servedBy":%q}`, a.name)
	}))
	t.Cleanup(func() {
		a.releaseAll()
		a.srv.Close()
	})
	return a
}

func (a *holdingAPI) releaseAll() {
	select {
	case <-a.release:
	default:
		close(a.release)
	}
}

// cutter is a TCP hop between a connector and the gateway whose connections the test cuts, as a network that
// drops a connector would (no close frame, no GoAway).
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target, conns: map[net.Conn]bool{}}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		ln.Close()
		c.cut()
		c.wg.Wait()
	})
	return c
}

func (c *cutter) url() string { return "http://" + c.ln.Addr().String() }

func (c *cutter) serve() {
	defer c.wg.Done()
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			in.Close()
			continue
		}
		c.mu.Lock()
		c.conns[in], c.conns[out] = true, true
		c.mu.Unlock()
		c.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer c.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(out, in)
		go pipe(in, out)
	}
}

// cut closes every connection through the hop.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		conn.Close()
		delete(c.conns, conn)
	}
}

// withAPI points a connector at api, and at gatewayURL when it is not "".
func withAPI(api *holdingAPI, gatewayURL string, more func(*connector.Config)) func(*connector.Config) {
	return func(cfg *connector.Config) {
		cfg.Kube = &rest.Config{Host: api.srv.URL}
		if gatewayURL != "" {
			cfg.GatewayURL = gatewayURL
		}
		if more != nil {
			more(cfg)
		}
	}
}

// answer is a caller's view of a request sent in the background.
type answer struct {
	code     int
	servedBy string
	message  string
	err      error
}

// sendAsync sends req in the background and returns the channel of its answer.
func sendAsync(req *http.Request) chan answer {
	done := make(chan answer, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body struct {
			ServedBy string `json:"servedBy"`
			Message  string `json:"message"` // of a Status
			Code     int    `json:"code"`
		}
		if err := json.Unmarshal(b, &body); err != nil {
			done <- answer{code: resp.StatusCode, err: fmt.Errorf("not JSON: %q", b)}
			return
		}
		a := answer{code: resp.StatusCode, servedBy: body.ServedBy, message: body.Message}
		if body.Code != 0 && body.Code != resp.StatusCode {
			a.err = fmt.Errorf("Status code %d in a %d answer", body.Code, resp.StatusCode)
		}
		done <- a
	}()
	return done
}

// holdOn sends requests made by newReq until one is held at api (requests the round robin gives to another
// connector are answered at once), and returns that one's answer channel.
func holdOn(t *testing.T, api *holdingAPI, newReq func() *http.Request) chan answer {
	t.Helper()
	for range 8 {
		before := api.held.Load()
		done := sendAsync(newReq())
		deadline := time.Now().Add(10 * time.Second)
		for api.held.Load() == before {
			select {
			case a := <-done:
				if a.err != nil || a.code >= 300 {
					t.Fatalf("request answered %d %q %v", a.code, a.message, a.err)
				}
				goto next // served by another connector: try again
			default:
			}
			if time.Now().After(deadline) {
				t.Fatal("a request neither held nor answered within 10s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return done
	next:
	}
	t.Fatalf("no request of 8 reached connector %s", api.name)
	return nil
}

func (e *env) newRequest(method, path, token, body string) *http.Request {
	e.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+"/clusters/prod"+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// TestDrainSendsNewRequestsElsewhere: a connector told to stop (its Run's context done, as on SIGTERM) takes no new
// request: every request sent meanwhile is served by the cluster's other connector, while the one it is serving
// finishes with its answer; then it leaves.
func TestDrainSendsNewRequestsElsewhere(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	apiA, apiB := newHoldingAPI(t, "a", true), newHoldingAPI(t, "b", false)
	a := e.startConnector("a", staticToken(tok), withAPI(apiA, "", func(c *connector.Config) { c.DrainTimeout = time.Minute }))
	e.startConnector("b", staticToken(tok), withAPI(apiB, "", nil))
	e.waitConnectors(2, 10*time.Second)
	caller := e.callerToken()

	inFlight := holdOn(t, apiA, func() *http.Request { return e.newRequest("GET", "/api/v1/namespaces/default/pods/hold", caller, "") })
	stopped := make(chan struct{})
	go func() {
		a.stop()
		close(stopped)
	}()
	eventually(t, 10*time.Second, "connector a drains", func() bool {
		return strings.Contains(a.logs.String(), "draining: the gateway sends new requests to the cluster's other connectors")
	})
	getsAtA := apiA.gets.Load()
	for i := range 20 {
		if code, by := e.listPods(caller); code != http.StatusOK || by != "b" {
			t.Fatalf("request %d while a drains: %d served by %q, want 200 by b", i, code, by)
		}
	}
	if n := apiA.gets.Load() - getsAtA; n != 0 {
		t.Fatalf("the draining connector took %d new requests", n)
	}
	select {
	case <-stopped:
		t.Fatal("connector a left before the request it serves ended")
	case got := <-inFlight:
		t.Fatalf("the request in flight ended before its answer: %+v", got)
	default:
	}
	apiA.releaseAll()
	select {
	case got := <-inFlight:
		if got.err != nil || got.code != http.StatusOK || got.servedBy != "a" {
			t.Fatalf("the request in flight during the drain: %+v, want 200 from a", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight had no answer 10s after its release")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("connector a did not leave once its last request ended")
	}
	e.waitConnectors(1, 10*time.Second)
}

// TestLostConnectorResendsReads: when a connector's connection is cut with requests in flight, a read (GET without
// body) goes again to the cluster's other connector and the caller gets its answer; a write (POST with a body)
// may have reached the API server and is not sent again: the caller gets 502 saying the connection was lost.
func TestLostConnectorResendsReads(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	apiA, apiB := newHoldingAPI(t, "a", true), newHoldingAPI(t, "b", false)
	hop := newCutter(t, e.srv.Listener.Addr().String())
	e.startConnector("a", staticToken(tok), withAPI(apiA, hop.url(), nil))
	e.startConnector("b", staticToken(tok), withAPI(apiB, "", nil))
	e.waitConnectors(2, 10*time.Second)
	caller, err := e.issuer.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"get", "list", "create"}, Resources: []string{"pods", "configmaps"}}}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("read", func(t *testing.T) {
		read := holdOn(t, apiA, func() *http.Request { return e.newRequest("GET", "/api/v1/namespaces/default/pods/hold", caller, "") })
		hop.cut()
		select {
		case got := <-read:
			if got.err != nil || got.code != http.StatusOK || got.servedBy != "b" {
				t.Fatalf("the read in flight on the lost connector: %+v, want 200 from b", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the read in flight on the lost connector had no answer within 20s")
		}
		if !strings.Contains(e.logs.String(), "request failed on this connector, trying the next") {
			t.Fatal("the gateway did not log the second attempt")
		}
	})
	e.waitConnectors(2, 20*time.Second) // a is back, through the hop

	t.Run("write", func(t *testing.T) {
		const path = "/api/v1/namespaces/default/configmaps"
		write := holdOn(t, apiA, func() *http.Request { return e.newRequest("POST", path, caller, `{"kind":"ConfigMap"}`) })
		postsAtB := apiB.posts.Load()
		hop.cut()
		var got answer
		select {
		case got = <-write:
		case <-time.After(20 * time.Second):
			t.Fatal("the write in flight on the lost connector had no answer within 20s")
		}
		// EOF: the tunnel ended under the stream before the API server's answer came back.
		const want = `the connection to cluster "prod" was lost mid-request: EOF`
		if got.err != nil || got.code != http.StatusBadGateway || got.message != want {
			t.Fatalf("the write in flight on the lost connector: %+v, want 502 %q", got, want)
		}
		if n := apiB.posts.Load() - postsAtB; n != 0 {
			t.Fatalf("the write was sent again to the other connector (%d times)", n)
		}
		rec := waitRecordOf(t, e.audit, func(r audit.Record) bool { return r.Method == "POST" && r.Status == http.StatusBadGateway })
		if rec.Cluster != "prod" || rec.Verb != "create" || rec.Resource != "configmaps" {
			t.Fatalf("the gateway's record of the lost write: %+v", rec)
		}
	})
}

// waitRecordOf is waitRecord for the env harness's log.
func waitRecordOf(t *testing.T, m *memAudit, match func(audit.Record) bool) audit.Record {
	t.Helper()
	return waitRecord(t, m, "the request", match)
}

// TestExecToldWhenItsConnectorIsLost: an exec session whose connector goes away gets the gateway's closing frame
// (1011) saying the connection to the cluster was lost, and its audit record is written.
func TestExecToldWhenItsConnectorIsLost(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{})
	tok, _ := e.token(time.Hour)
	s := e.openExec(tok)
	e.stopConnector()
	code, reason, err := s.closing()
	if err != nil || code != 1011 || reason != `warren: the connection to cluster "prod" was lost` {
		t.Fatalf("closing frame %d %q (%v), want 1011 %q", code, reason, err, `warren: the connection to cluster "prod" was lost`)
	}
	waitRecord(t, e.gwAudit, "the exec", func(r audit.Record) bool { return r.Subresource == "exec" && r.Status == http.StatusSwitchingProtocols })
}

// TestMaxStreamLength: exec, watch and logs -f reach the gateway's maximum stream length: the exec gets a closing
// frame (1008) that says so, the watch and the follow end cleanly (the body ends without error, as the API server
// ends a watch), the API server's side ends too, and each audit record notes why.
func TestMaxStreamLength(t *testing.T) {
	const max = 1500 * time.Millisecond
	e := newProxyEnv(t, proxyEnvOpts{maxStreamDuration: max})
	tok, _ := e.token(time.Hour)
	start := time.Now()
	_, watch := e.openStream(tok, "/api/v1/namespaces/ns/configmaps?watch=1")
	_, follow := e.openStream(tok, "/api/v1/namespaces/ns/pods/p/log?follow=true")
	exec := e.openExec(tok)
	ended := make(chan string, 3)
	for what, r := range map[string]io.Reader{"watch": watch, "logs -f": follow} {
		go func() {
			if _, err := io.Copy(io.Discard, r); err != nil {
				ended <- fmt.Sprintf("%s: ended with %v, want a clean end", what, err)
				return
			}
			ended <- ""
		}()
	}
	go func() {
		code, why, err := exec.closing()
		if want := "warren: the session reached the maximum stream length of 1.5s"; err != nil || code != 1008 || why != want {
			ended <- fmt.Sprintf("exec: closing frame %d %q (%v), want 1008 %q", code, why, err, want)
			return
		}
		ended <- ""
	}()
	for range 3 {
		select {
		case msg := <-ended:
			if msg != "" {
				t.Error(msg)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("streams still open 30s after their maximum length")
		}
	}
	if took := time.Since(start); took < max {
		t.Fatalf("streams ended after %v, before their maximum length of %v", took, max)
	}
	for _, path := range []string{"/configmaps", "/log", "/exec"} {
		waitRecord(t, e.gwAudit, "gateway "+path, func(r audit.Record) bool {
			return strings.Contains(r.Path, path) && r.Reason == "ended after the maximum stream length of 1.5s"
		})
	}
	waitUntil(t, 10*time.Second, "the API server's side of the streams ends", func() bool { return e.api.streams.Load() == 0 })
	// A short request is not a stream: it is not cut.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := e.request(tok, "/api/v1/namespaces/ns/pods").WithContext(ctx)
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a list after the streams: %v %v", resp, err)
	}
	resp.Body.Close()
}

package gateway_test

// What happens to requests when a connector leaves, in-process: a connector that drains (SIGTERM: its Run's context
// ends), one whose connection is cut mid-request (a read goes to the cluster's other connector, a write is answered
// 502), an exec whose connector is lost, and streams that reach the maximum stream length.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/connector"
	"github.com/warren-dev/warren/gateway"
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

// holdingAPI is an API server stand-in on e's network.
func (e *env) holdingAPI(name string, hold bool) *holdingAPI {
	a := &holdingAPI{name: name, hold: hold, release: make(chan struct{})}
	a.srv = e.net.server(e.t, name+".held.test:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	e.t.Cleanup(func() {
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

// withAPI points a connector at api.
func withAPI(api *holdingAPI, more func(*connector.Config)) func(*connector.Config) {
	return func(cfg *connector.Config) {
		cfg.Kube.Host = api.srv.URL
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

// sendAsync sends req in the background with c and returns the channel of its answer.
func sendAsync(c *http.Client, req *http.Request) chan answer {
	done := make(chan answer, 1)
	go func() {
		resp, err := c.Do(req)
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
// connector are answered at once), and returns that one's answer channel. It runs in a bubble: once every
// goroutine waits, a request is either held or answered.
func (e *env) holdOn(api *holdingAPI, newReq func() *http.Request) chan answer {
	e.t.Helper()
	for range 8 {
		before := api.held.Load()
		done := sendAsync(e.net.client, newReq())
		synctest.Wait()
		if api.held.Load() > before {
			return done
		}
		select {
		case a := <-done:
			if a.err != nil || a.code >= 300 {
				e.t.Fatalf("request answered %d %q %v", a.code, a.message, a.err)
			}
			// served by another connector: try again
		default:
			e.t.Fatal("a request neither held nor answered")
		}
	}
	e.t.Fatalf("no request of 8 reached connector %s", api.name)
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

// pending reports whether nothing came on ch yet.
func pending[T any](ch chan T) bool {
	select {
	case v := <-ch:
		// Put it back for the caller's next look.
		ch <- v
		return false
	default:
		return true
	}
}

// TestDrainSendsNewRequestsElsewhere (in a synctest bubble, on an in-memory network): a connector told to stop (its
// Run's context done, as on SIGTERM) takes no new request: every request sent meanwhile is served by the cluster's
// other connector, while the one it is serving finishes with its answer, however long it takes within the drain
// timeout; then it leaves.
func TestDrainSendsNewRequestsElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, memoryNet(t), nil)
		tok := e.connectorToken("prod", time.Hour)
		apiA, apiB := e.holdingAPI("a", true), e.holdingAPI("b", false)
		a := e.startConnector("a", staticToken(tok), withAPI(apiA, func(c *connector.Config) { c.DrainTimeout = time.Minute }))
		e.startConnector("b", staticToken(tok), withAPI(apiB, nil))
		e.waitConnectors(2, 10*time.Second)
		caller := e.callerToken()

		inFlight := e.holdOn(apiA, func() *http.Request { return e.newRequest("GET", "/api/v1/namespaces/default/pods/hold", caller, "") })
		stopped := make(chan struct{}, 1)
		go func() {
			a.stop()
			stopped <- struct{}{}
		}()
		synctest.Wait()
		if !strings.Contains(a.logs.String(), "draining: the gateway sends new requests to the cluster's other connectors") {
			t.Fatal("connector a did not say it drains")
		}
		getsAtA := apiA.gets.Load()
		for i := range 20 {
			if code, by := e.listPods(caller); code != http.StatusOK || by != "b" {
				t.Fatalf("request %d while a drains: %d served by %q, want 200 by b", i, code, by)
			}
		}
		if n := apiA.gets.Load() - getsAtA; n != 0 {
			t.Fatalf("the draining connector took %d new requests", n)
		}
		// Just inside the drain timeout, a still serves the request and has not left.
		time.Sleep(time.Minute - time.Millisecond)
		synctest.Wait()
		if !pending(stopped) {
			t.Fatal("connector a left before the request it serves ended")
		}
		if !pending(inFlight) {
			t.Fatalf("the request in flight ended before its answer: %+v", <-inFlight)
		}
		apiA.releaseAll()
		synctest.Wait()
		if got := <-inFlight; got.err != nil || got.code != http.StatusOK || got.servedBy != "a" {
			t.Fatalf("the request in flight during the drain: %+v, want 200 from a", got)
		}
		// It leaves at the next look of http.Server.Shutdown at its connections: every 500 ms at most (+10% jitter).
		time.Sleep(550 * time.Millisecond)
		synctest.Wait()
		if pending(stopped) {
			t.Fatal("connector a did not leave within 550 ms of its last request's end")
		}
		if n := e.g.Connectors("prod"); n != 1 {
			t.Fatalf("the gateway has %d tunnels for prod once a left, want 1", n)
		}
	})
}

// TestDrainTimeoutCutsWhatIsLeft (in a bubble): a request still running when the drain timeout ends is cut at that
// moment, not before; a write cut so is not sent again (the caller gets 502), and the connector leaves.
func TestDrainTimeoutCutsWhatIsLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, memoryNet(t), nil)
		tok := e.connectorToken("prod", time.Hour)
		apiA, apiB := e.holdingAPI("a", true), e.holdingAPI("b", false)
		const drain = 30 * time.Second
		a := e.startConnector("a", staticToken(tok), withAPI(apiA, func(c *connector.Config) { c.DrainTimeout = drain }))
		e.startConnector("b", staticToken(tok), withAPI(apiB, nil))
		e.waitConnectors(2, 10*time.Second)
		caller := e.writerToken()

		write := e.holdOn(apiA, func() *http.Request {
			return e.newRequest("POST", "/api/v1/namespaces/default/configmaps", caller, `{"kind":"ConfigMap"}`)
		})
		postsAtB := apiB.posts.Load() // the round robin may have given b some before
		stopped := make(chan struct{}, 1)
		go func() {
			a.stop()
			stopped <- struct{}{}
		}()
		time.Sleep(drain - time.Millisecond)
		synctest.Wait()
		if !pending(stopped) || !pending(write) || apiA.held.Load() != 1 {
			t.Fatalf("before the drain timeout: stopped %v, answered %v, held at the API server %d; want the write still held",
				!pending(stopped), !pending(write), apiA.held.Load())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if pending(stopped) {
			t.Fatal("connector a still runs at its drain timeout")
		}
		if !strings.Contains(a.logs.String(), `msg="requests still running after the drain timeout are cut" connector=a drain_timeout=30s`) {
			t.Fatalf("connector a did not say it cut requests:\n%s", a.logs.String())
		}
		const want = `the connection to cluster "prod" was lost mid-request: EOF`
		if got := <-write; got.err != nil || got.code != http.StatusBadGateway || got.message != want {
			t.Fatalf("the write cut at the drain timeout: %+v, want 502 %q", got, want)
		}
		if n := apiB.posts.Load() - postsAtB; n != 0 {
			t.Fatalf("the write was sent again to the other connector (%d times)", n)
		}
		if apiA.held.Load() != 0 {
			t.Fatal("the API server still holds the cut request")
		}
	})
}

// TestLostConnectorResendsReads (in a bubble): when a connector's connection is cut with requests in flight, a read
// (GET without body) goes again to the cluster's other connector and the caller gets its answer; a write (POST with
// a body) may have reached the API server and is not sent again: the caller gets 502 saying the connection was lost.
// Both are answered the moment the cut is noticed (no timer runs between).
func TestLostConnectorResendsReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnvOn(t, memoryNet(t), nil)
		tok := e.connectorToken("prod", time.Hour)
		apiA, apiB := e.holdingAPI("a", true), e.holdingAPI("b", false)
		e.startConnector("a", staticToken(tok), withAPI(apiA, nil))
		e.startConnector("b", staticToken(tok), withAPI(apiB, nil))
		e.waitConnectors(2, 10*time.Second)
		caller := e.writerToken()

		// A read.
		read := e.holdOn(apiA, func() *http.Request { return e.newRequest("GET", "/api/v1/namespaces/default/pods/hold", caller, "") })
		e.net.cut("a")
		synctest.Wait()
		if pending(read) {
			t.Fatal("read: no answer once the connection was cut")
		}
		if got := <-read; got.err != nil || got.code != http.StatusOK || got.servedBy != "b" {
			t.Fatalf("read: the read in flight on the lost connector: %+v, want 200 from b", got)
		}
		if !strings.Contains(e.logs.String(), "request failed on this connector, trying the next") {
			t.Fatal("read: the gateway did not log the second attempt")
		}
		e.waitConnectors(2, 10*time.Second) // a is back after its backoff

		// A write.
		write := e.holdOn(apiA, func() *http.Request {
			return e.newRequest("POST", "/api/v1/namespaces/default/configmaps", caller, `{"kind":"ConfigMap"}`)
		})
		postsAtB := apiB.posts.Load()
		e.net.cut("a")
		synctest.Wait()
		if pending(write) {
			t.Fatal("write: no answer once the connection was cut")
		}
		// EOF: the tunnel ended under the stream before the API server's answer came back.
		const want = `the connection to cluster "prod" was lost mid-request: EOF`
		if got := <-write; got.err != nil || got.code != http.StatusBadGateway || got.message != want {
			t.Fatalf("write: the write in flight on the lost connector: %+v, want 502 %q", got, want)
		}
		if n := apiB.posts.Load() - postsAtB; n != 0 {
			t.Fatalf("write: the write was sent again to the other connector (%d times)", n)
		}
		rec := waitRecord(t, e.audit, "the lost write", func(r audit.Record) bool { return r.Method == "POST" && r.Status == http.StatusBadGateway })
		if rec.Cluster != "prod" || rec.Verb != "create" || rec.Resource != "configmaps" {
			t.Fatalf("write: the gateway's record of the lost write: %+v", rec)
		}
	})
}

// writerToken may read pods and create config maps in cluster prod.
func (e *env) writerToken() string {
	e.t.Helper()
	tok, err := e.issuer.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"get", "list", "create"}, Resources: []string{"pods", "configmaps"}}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
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

// TestMaxStreamLength (in a bubble): exec, watch and logs -f reach the gateway's maximum stream length, exactly then
// and not a millisecond before: the exec gets a closing frame (1008) that says so, the watch and the follow end
// cleanly (the body ends without error, as the API server ends a watch), the API server's side ends too, and each
// audit record notes why. A short request after them is not cut.
func TestMaxStreamLength(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const max = 10 * time.Minute
		// The token re-checks run every minute: the subject is the length, not the re-checks.
		e := newProxyEnv(t, proxyEnvOpts{maxStreamDuration: max, gwInterval: time.Minute, connInterval: time.Minute, net: memoryNet(t)})
		tok, _ := e.token(time.Hour)
		start := time.Now()
		_, watch := e.openStream(tok, "/api/v1/namespaces/ns/configmaps?watch=1")
		_, follow := e.openStream(tok, "/api/v1/namespaces/ns/pods/p/log?follow=true")
		exec := e.openExec(tok)
		if time.Since(start) != 0 {
			t.Fatalf("opening the streams took %v of the bubble's time", time.Since(start))
		}
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
			if want := "warren: the session reached the maximum stream length of 10m0s"; err != nil || code != 1008 || why != want {
				ended <- fmt.Sprintf("exec: closing frame %d %q (%v), want 1008 %q", code, why, err, want)
				return
			}
			ended <- ""
		}()
		time.Sleep(max - time.Millisecond)
		synctest.Wait()
		if n := len(ended); n != 0 {
			t.Fatalf("%d streams ended before their maximum length", n)
		}
		if n := e.api.streams.Load(); n != 3 {
			t.Fatalf("the API server has %d streams open a millisecond before the maximum length, want 3", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := len(ended); n != 3 {
			t.Fatalf("%d of 3 streams ended at their maximum length", n)
		}
		for range 3 {
			if msg := <-ended; msg != "" {
				t.Error(msg)
			}
		}
		if n := e.api.streams.Load(); n != 0 {
			t.Fatalf("the API server has %d streams open at the maximum length, want 0", n)
		}
		for _, path := range []string{"/configmaps", "/log", "/exec"} {
			waitRecord(t, e.gwAudit, "gateway "+path, func(r audit.Record) bool {
				return strings.Contains(r.Path, path) && r.Reason == "ended after the maximum stream length of 10m0s"
			})
		}
		resp, err := e.get(tok, "/api/v1/namespaces/ns/pods")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a list after the streams: %v %v", resp, err)
		}
		resp.Body.Close()
	})
}

// TestUnauditableConnectorIsPassedOver: a connector that cannot write its audit log refuses every request (fail
// closed); the gateway then sends a request without a body (a read, an exec upgrade) to the cluster's next
// connector, so callers are served while one connector's disk is full. A request with a body went to the refusing
// connector and is not sent again: its caller gets that connector's 503. With every connector refusing, the caller
// gets the refusal, not "no connector".
func TestUnauditableConnectorIsPassedOver(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *gateway.Config, _ *auth.VerifierConfig) { c.Metrics = reg })
	unavailable := func() float64 {
		return counter(t, reg, "warren_gateway_connector_unavailable_total", map[string]string{"cluster": "prod", "reason": "unauditable"})
	}
	tok := e.connectorToken("prod", time.Hour)
	sinkA, sinkB := &failingSink{}, &failingSink{}
	sinkA.setBroken(true)
	apiA, apiB := e.holdingAPI("a", false), e.holdingAPI("b", false)
	e.startConnector("a", staticToken(tok), withAPI(apiA, func(c *connector.Config) { c.Audit = sinkA }))
	e.startConnector("b", staticToken(tok), withAPI(apiB, func(c *connector.Config) { c.Audit = sinkB }))
	e.waitConnectors(2, 10*time.Second)
	caller, err := e.issuer.IssueCaller(auth.IssueOptions{Subject: "alice", Clusters: []string{"prod"}, TTL: time.Hour,
		Rules: []auth.Rule{{Verbs: []string{"get", "list", "create"}, Resources: []string{"pods", "pods/exec", "configmaps"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *http.Request) answer {
		t.Helper()
		got := <-sendAsync(e.net.client, req)
		if got.err != nil {
			t.Fatal(got.err)
		}
		return got
	}
	const refusal = "connector: cannot write its audit log (disk full); it refuses requests until it can"

	for i := range 10 {
		if got := ask(e.newRequest("GET", "/api/v1/namespaces/default/pods", caller, "")); got.code != http.StatusOK || got.servedBy != "b" {
			t.Fatalf("read %d: %+v, want 200 from b", i, got)
		}
		exec := e.newRequest("GET", "/api/v1/namespaces/default/pods/p/exec?command=sh&stdout=true", caller, "")
		exec.Header.Set("Connection", "Upgrade")
		exec.Header.Set("Upgrade", "websocket")
		if got := ask(exec); got.code != http.StatusOK || got.servedBy != "b" {
			t.Fatalf("exec %d: %+v, want the API server's answer from b", i, got)
		}
	}
	var refusedWrites int
	for i := range 10 {
		got := ask(e.newRequest("POST", "/api/v1/namespaces/default/configmaps", caller, `{"kind":"ConfigMap"}`))
		switch {
		case got.code == http.StatusOK && got.servedBy == "b":
		case got.code == http.StatusServiceUnavailable && got.message == refusal:
			refusedWrites++
		default:
			t.Fatalf("write %d: %+v, want 200 from b or 503 %q", i, got, refusal)
		}
	}
	if refusedWrites == 0 {
		t.Fatal("no write went to the refusing connector first: the round robin did not reach it")
	}
	if n := apiA.gets.Load() + apiA.posts.Load(); n != 0 {
		t.Fatalf("the refusing connector's API server saw %d requests", n)
	}
	// Every other request starts at a: 10 of 20 reads and execs, 5 of 10 writes, counted.
	if n := unavailable(); n != 15 || refusedWrites != 5 {
		t.Fatalf("warren_gateway_connector_unavailable_total = %v with %d refused writes, want 15 with 5 (the round robin starts every other request at a)", n, refusedWrites)
	}
	before := unavailable()

	sinkB.setBroken(true)
	resp, err := e.net.client.Do(e.newRequest("GET", "/api/v1/namespaces/default/pods", caller, ""))
	if err != nil {
		t.Fatal(err)
	}
	checkRefusal(t, resp, answerWant{503, refusal, "5"})
	if n := unavailable() - before; n != 2 {
		t.Fatalf("a read both connectors refused counted %v times, want 2", n)
	}
	if h := resp.Header.Get("Warren-Refusal"); h != "" {
		t.Fatalf("the caller got the connectors' Warren-Refusal header: %q", h)
	}
}

// TestAPIServerCannotForgeARefusal: an API server (or anything behind a connector) that answers 503 with the
// connectors' Warren-Refusal header (in any case) does not make the gateway send the request again elsewhere: the connector drops
// Warren-* headers from the API server's answers, so its 503 reaches the caller as the API server's.
func TestAPIServerCannotForgeARefusal(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.connectorToken("prod", time.Hour)
	var forged atomic.Int64
	forger := e.net.server(t, "forger.test:80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forged.Add(1)
		w.Header().Set("Warren-Refusal", "unauditable")
		w.Header()["warren-REFUSAL"] = []string{"unauditable"} // sent as spelled: the other side reads it canonical
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forged","code":503}`)
	}))
	t.Cleanup(forger.Close)
	apiB := e.holdingAPI("b", false)
	e.startConnector("a", staticToken(tok), func(c *connector.Config) { c.Kube.Host = forger.URL })
	e.startConnector("b", staticToken(tok), withAPI(apiB, nil))
	e.waitConnectors(2, 10*time.Second)
	caller := e.callerToken()
	var unavailable int
	for i := range 10 {
		got := <-sendAsync(e.net.client, e.newRequest("GET", "/api/v1/namespaces/default/pods", caller, ""))
		switch {
		case got.err == nil && got.code == http.StatusOK && got.servedBy == "b":
		case got.err == nil && got.code == http.StatusServiceUnavailable && got.message == "forged":
			unavailable++
		default:
			t.Fatalf("read %d: %+v", i, got)
		}
	}
	if unavailable == 0 || int64(unavailable) != forged.Load() {
		t.Fatalf("%d answers were the API server's 503, which it sent %d times: want the same, and some", unavailable, forged.Load())
	}
	if n := apiB.gets.Load(); n != int64(10-unavailable) {
		t.Fatalf("b's API server saw %d reads, want %d: a forged refusal was sent on", n, 10-unavailable)
	}
}

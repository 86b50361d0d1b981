package gateway_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/testenv/wait"
	"github.com/warren-dev/warren/tunnel"
)

// status reads a Kubernetes Status answer.
func status(t *testing.T, resp *http.Response) (code int, message, retryAfter string) {
	t.Helper()
	defer resp.Body.Close()
	var s struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%d: not a Status: %q", resp.StatusCode, b)
	}
	if s.Code != resp.StatusCode {
		t.Fatalf("Status code %d in a %d answer", s.Code, resp.StatusCode)
	}
	return resp.StatusCode, s.Message, resp.Header.Get("Retry-After")
}

// TestEveryBooleanSpellingIsAStream: a follow or a watch counts against --token-streams however its boolean is
// spelled, as long as the API server reads it as true; and a log without follow counts too (the API server treats
// every log as long-running). On the old code only follow=true counted: the second stream of each other spelling
// was let through.
func TestEveryBooleanSpellingIsAStream(t *testing.T) {
	e := newProxyEnv(t, proxyEnvOpts{limits: limit.New(limit.Config{TokenStreams: 1})})
	paths := []string{
		"/api/v1/namespaces/ns/pods/p/log?follow=1",
		"/api/v1/namespaces/ns/pods/p/log?follow=yes",
		"/api/v1/namespaces/ns/pods/p/log?follow=TRUE",
		"/api/v1/namespaces/ns/pods/p/log?follow=",
		"/api/v1/namespaces/ns/pods/p/log?follow",
		"/api/v1/namespaces/ns/pods/p/log",
		"/api/v1/namespaces/ns/configmaps?watch=1",
		"/api/v1/namespaces/ns/configmaps?watch=yes",
		"/api/v1/namespaces/ns/configmaps?watch=",
		"/api/v1/watch/namespaces/ns/configmaps",
	}
	for _, p := range paths {
		tok, _ := e.token(time.Hour) // a fresh token per spelling: its one stream slot is free
		resp, _ := e.openStream(tok, p)
		second, err := e.get(tok, p)
		if err != nil {
			t.Fatal(err)
		}
		if second.StatusCode != http.StatusTooManyRequests {
			second.Body.Close()
			t.Errorf("%s: second stream of the token: %d, want 429", p, second.StatusCode)
			resp.Body.Close()
			continue
		}
		code, msg, retry := status(t, second)
		if code != http.StatusTooManyRequests || msg != "too many concurrent streams (watch, exec, attach, port-forward, logs, proxy) for this token (at most 1 at once)" || retry != "5" {
			t.Errorf("%s: second stream of the token: %d %q (Retry-After %q), want 429", p, code, msg, retry)
		}
		resp.Body.Close()
	}
}

// TestOneTokenCannotExhaustATunnel: a token that opens streams without end gets 429 once it holds its share of the
// tunnel (a quarter by default), and another token's request is served at once meanwhile. On the old code the
// first token took every stream of the tunnel (its follows with follow=1 were not even counted) and the other
// caller's request hung.
func TestOneTokenCannotExhaustATunnel(t *testing.T) {
	const maxStreams = 16
	e := newProxyEnv(t, proxyEnvOpts{tunnel: tunnel.Config{MaxStreams: maxStreams},
		limits: limit.New(limit.Config{TokenStreams: 1000, TokenInflight: 1000})})
	hog, _ := e.token(time.Hour)
	held := 0
	for range maxStreams {
		resp, err := e.get(hog, "/api/v1/namespaces/ns/pods/p/log?follow=1")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			code, msg, retry := status(t, resp)
			if want := `too many requests in flight for this token on cluster "prod": it holds its share of the streams of each of the cluster's tunnels (25%, so that other callers are served); retry when some have ended`; msg != want || retry != "1" {
				t.Fatalf("refusal: %d %q (Retry-After %q), want %q", code, msg, retry, want)
			}
			break
		}
		t.Cleanup(func() { resp.Body.Close() })
		held++
	}
	if held != maxStreams/4 {
		t.Fatalf("one token holds %d of the tunnel's %d streams, want %d", held, maxStreams, maxStreams/4)
	}
	other, _ := e.token(time.Hour)
	done := make(chan int, 1)
	go func() {
		resp, err := e.get(other, "/api/v1/namespaces/ns/pods")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Fatalf("another token's request: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("another token's request still waits 10s later: one token exhausted the tunnel")
	}
}

// TestInflightCapCountsEveryRequest: not only streams count: a token's requests in flight of any kind are capped
// (here 2 lists the API server is slow to answer), and the next one is refused with 429 until one ends.
func TestInflightCapCountsEveryRequest(t *testing.T) {
	api := newFakeAPI(t)
	api.holdLists = make(chan struct{})
	e := newProxyEnv(t, proxyEnvOpts{api: api, limits: limit.New(limit.Config{TokenInflight: 2})})
	tok, _ := e.token(time.Hour)
	answered := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := e.get(tok, "/api/v1/namespaces/ns/pods")
			if err != nil {
				answered <- 0
				return
			}
			resp.Body.Close()
			answered <- resp.StatusCode
		}()
	}
	wait.Until(t, 10*time.Second, "two lists held at the API server", func() bool { return api.listsHeld.Load() == 2 })
	resp, err := (&http.Client{Transport: client.Transport, Timeout: 10 * time.Second}).Do(e.request(tok, "/api/v1/namespaces/ns/pods"))
	if err != nil {
		t.Fatalf("third request in flight: %v, want 429 at once", err)
	}
	code, msg, retry := status(t, resp)
	if code != http.StatusTooManyRequests || msg != "too many requests in flight for this token (at most 2 at once); retry when some have ended" || retry != "1" {
		t.Fatalf("third request: %d %q (Retry-After %q)", code, msg, retry)
	}
	close(api.holdLists)
	for range 2 {
		if c := <-answered; c != http.StatusOK {
			t.Fatalf("held request answered %d", c)
		}
	}
	resp, err = e.get(tok, "/api/v1/namespaces/ns/pods")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after the held requests ended: %v %v", resp, err)
	}
	resp.Body.Close()
}

package gateway

import (
	"errors"
	"net/http"
	"testing"

	"github.com/warren-dev/warren/tunnel"
)

func TestSplitClusterPath(t *testing.T) {
	cases := []struct {
		in, cluster, rest string
		ok                bool
	}{
		{"/clusters/prod/api/v1/pods", "prod", "/api/v1/pods", true},
		{"/clusters/prod", "prod", "/", true},
		{"/clusters/prod/", "prod", "/", true},
		{"/clusters/prod/api/v1/namespaces/a%2Fb", "prod", "/api/v1/namespaces/a%2Fb", true},
		{"/clusters/", "", "", false},
		{"/clusters//api", "", "", false},
		{"/other/prod/api", "", "", false},
	}
	for _, c := range cases {
		cluster, rest, ok := splitClusterPath(c.in)
		if cluster != c.cluster || rest != c.rest || ok != c.ok {
			t.Errorf("splitClusterPath(%q) = %q %q %v, want %q %q %v", c.in, cluster, rest, ok, c.cluster, c.rest, c.ok)
		}
	}
}

func TestRegistrySpreadsAndForgets(t *testing.T) {
	r := newRegistry([]string{"known"})
	if _, _, err := r.sessions("nope"); !errors.Is(err, errUnknownCluster) {
		t.Fatalf("unknown cluster: %v", err)
	}
	if _, _, err := r.sessions("known"); !errors.Is(err, errNoConnector) {
		t.Fatalf("configured cluster without connector: %v", err)
	}
	a := &connectorSession{cluster: "prod", id: "a", tunnel: &tunnel.Session{}}
	b := &connectorSession{cluster: "prod", id: "b", tunnel: &tunnel.Session{}}
	r.add(a)
	r.add(b)
	firsts := map[string]int{}
	for range 10 {
		list, start, err := r.sessions("prod")
		if err != nil || len(list) != 2 {
			t.Fatalf("sessions: %v %v", list, err)
		}
		firsts[list[start].id]++
	}
	if firsts["a"] != 5 || firsts["b"] != 5 {
		t.Fatalf("first picks %v, want an even spread", firsts)
	}
	r.remove(a)
	list, start, _ := r.sessions("prod")
	if len(list) != 1 || list[start] != b {
		t.Fatalf("after removing a: %v", list)
	}
	r.remove(b)
	if _, _, err := r.sessions("prod"); !errors.Is(err, errNoConnector) {
		t.Fatalf("a cluster whose connectors left stays known: %v", err)
	}
}

func TestResendable(t *testing.T) {
	get, _ := http.NewRequest("GET", "http://x/api", nil)
	post, _ := http.NewRequest("POST", "http://x/api", http.NoBody)
	upgrade, _ := http.NewRequest("GET", "http://x/exec", nil)
	upgrade.Header.Set("Upgrade", "websocket")
	upgrade.Header.Set("Connection", "Upgrade")
	// Without Connection: upgrade the proxy forwards no upgrade: a plain GET, safe to send again.
	notUpgrade, _ := http.NewRequest("GET", "http://x/exec", nil)
	notUpgrade.Header.Set("Upgrade", "websocket")
	lost := errors.New("connection reset")
	open := &openError{errors.New("session closed")}
	cases := []struct {
		req  *http.Request
		err  error
		want bool
	}{
		{get, lost, true}, {post, lost, false}, {upgrade, lost, false}, {notUpgrade, lost, true},
		{get, open, true}, {post, open, true}, {upgrade, open, true},
	}
	for _, c := range cases {
		if got := resendable(c.req, c.err); got != c.want {
			t.Errorf("resendable(%s upgrade=%q, %v) = %v, want %v", c.req.Method, c.req.Header.Get("Upgrade"), c.err, got, c.want)
		}
	}
}

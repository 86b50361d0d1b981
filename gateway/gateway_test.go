package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/warren-dev/warren/auth"
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

func TestRegistryBoundsAndSpread(t *testing.T) {
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	l := limits{maxIdentities: 2, maxTunnels: 2, linger: time.Minute}
	r := newRegistry([]string{"known"})
	if _, err := r.backends("nope"); !errors.Is(err, errUnknownCluster) {
		t.Fatalf("unknown cluster: %v", err)
	}
	if _, err := r.backends("known"); !errors.Is(err, errNoConnector) {
		t.Fatalf("configured cluster without connector: %v", err)
	}
	cred := func(id string) *auth.CredentialClaims {
		c := &auth.CredentialClaims{Cluster: "prod"}
		c.ID, c.ExpiresAt = "cred-"+id, jwt.NewNumericDate(now.Add(time.Hour))
		c.Confirmation.KeyThumbprint = id
		c.Join = auth.JoinRef{ID: "join", ExpiresAt: c.ExpiresAt}
		return c
	}
	open := func(id, session string) (*connectorSession, error) {
		_, _, res, err := r.reserve(cred(id), now, l)
		if err != nil {
			return nil, err
		}
		cs := &connectorSession{id: session, cluster: "prod", tunnel: &tunnel.Session{}}
		cs.ident = res.ident
		if !res.commit(cs) {
			t.Fatalf("commit %s refused", session)
		}
		return cs, nil
	}
	a1, _ := open("A", "a1")
	var bs []*connectorSession
	for i := range 2 {
		cs, err := open("B", fmt.Sprintf("b%d", i))
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, cs)
	}
	if _, err := open("B", "b2"); !errors.Is(err, errTunnelLimit) {
		t.Fatalf("third tunnel of B: %v", err)
	}
	if _, err := open("C", "c0"); !errors.Is(err, errIdentityLimit) {
		t.Fatalf("third identity: %v", err)
	}
	if r.count("prod") != 3 || r.countIdentities("prod") != 2 {
		t.Fatalf("count %d, identities %d", r.count("prod"), r.countIdentities("prod"))
	}
	// Identities first: A (one tunnel) gets as many first picks as B (two).
	first := map[string]int{}
	for range 100 {
		b, err := r.backends("prod")
		if err != nil || b.total != 3 {
			t.Fatalf("backends: %+v %v", b, err)
		}
		var order []string
		for cs := range b.all {
			order = append(order, cs.id)
		}
		if len(order) != 3 {
			t.Fatalf("order %v", order)
		}
		first[order[0]]++
	}
	if first["a1"] != 50 || first["b0"] != 25 || first["b1"] != 25 {
		t.Fatalf("first picks %v, want a1 50, b0 25, b1 25", first)
	}
	// A lingers without tunnels: its slot stays while the linger lasts, so C is still refused; then C gets it.
	r.remove(a1, now)
	if _, err := open("C", "c0"); !errors.Is(err, errIdentityLimit) {
		t.Fatalf("C while A lingers: %v", err)
	}
	now = now.Add(time.Minute)
	if _, err := open("C", "c0"); err != nil {
		t.Fatalf("C after A lingered out: %v", err)
	}
	// A forgotten identity's tunnels leave the rotation at once.
	gone := r.forget(bs[0].ident)
	if len(gone) != 2 || r.count("prod") != 1 {
		t.Fatalf("forgot %d tunnels, %d left", len(gone), r.count("prod"))
	}
	for _, cs := range gone {
		r.remove(cs, now)
	}
	r.remove(a1, now) // twice: a no-op
	b, _ := r.backends("prod")
	for cs := range b.all {
		if cs.id != "c0" {
			t.Fatalf("routed to %s", cs.id)
		}
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

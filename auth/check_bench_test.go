package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http/httptest"
	"testing"
	"time"
)

// The authorization work the gateway and the connector each do per request: go test -run '^$' -bench . -benchmem ./auth

func BenchmarkCheck(b *testing.B) {
	claims := benchClaims(b)
	for _, c := range []struct{ name, path string }{
		{"get pod", "/api/v1/namespaces/payments/pods/api-7f9c"},
		{"pod log", "/api/v1/namespaces/payments/pods/api-7f9c/log"},
		{"list deployments", "/apis/apps/v1/namespaces/payments/deployments"},
		{"denied secret", "/api/v1/namespaces/payments/secrets/db"},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "http://x"+c.path, nil)
			b.ReportAllocs()
			for b.Loop() {
				Check(r, c.path, claims, nil)
			}
		})
	}
}

// BenchmarkVerify is the token check that precedes Check: one Ed25519 signature verification per request.
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	sk, err := NewSigningKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := NewStaticKeys(pub)
	if err != nil {
		b.Fatal(err)
	}
	v, err := NewVerifier(VerifierConfig{Keys: keys, Audience: AudienceCaller})
	if err != nil {
		b.Fatal(err)
	}
	rule, _ := ParseRule("get,list:pods,pods/log")
	tok, err := sk.IssueCaller(IssueOptions{Subject: "bench", Clusters: []string{"prod"}, Rules: []Rule{rule}, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func benchClaims(b *testing.B) *Claims {
	b.Helper()
	var rules []Rule
	for _, s := range []string{"get,list,watch:pods,pods/log:payments,web", "get,list:deployments.apps:*", "create:pods/exec:payments:api-7f9c"} {
		r, err := ParseRule(s)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, r)
	}
	return &Claims{Warren: Scope{Clusters: []string{"prod"}, Rules: rules}}
}

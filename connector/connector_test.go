package connector

import (
	"testing"
	"time"
)

func TestBackoffIsExponentialWithFullJitterAndACap(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 30 * time.Second}.withDefaults()
	cases := []struct {
		attempt int
		ceiling time.Duration
	}{{0, time.Second}, {1, 2 * time.Second}, {4, 16 * time.Second}, {5, 30 * time.Second}, {40, 30 * time.Second}, {1 << 20, 30 * time.Second}}
	for _, c := range cases {
		// Full jitter: the wait is uniform in [0, ceiling): the extremes of Rand give 0 and just under the ceiling.
		b.Rand = func() float64 { return 0 }
		if d := b.delay(c.attempt); d != 0 {
			t.Errorf("attempt %d with rand 0: %v, want 0", c.attempt, d)
		}
		b.Rand = func() float64 { return 0.999999 }
		if d := b.delay(c.attempt); d > c.ceiling || d < c.ceiling*99/100 {
			t.Errorf("attempt %d with rand ~1: %v, want just under %v", c.attempt, d, c.ceiling)
		}
	}
}

func TestTunnelURL(t *testing.T) {
	cases := map[string]string{
		"https://gw.example.com":            "wss://gw.example.com/connect",
		"https://gw.example.com:8443/":      "wss://gw.example.com:8443/connect",
		"https://gw.example.com/warren?x=1": "wss://gw.example.com/warren/connect",
		"http://127.0.0.1:8080":             "ws://127.0.0.1:8080/connect",
		"wss://gw.example.com":              "wss://gw.example.com/connect",
	}
	for in, want := range cases {
		got, err := tunnelURL(in)
		if err != nil || got != want {
			t.Errorf("tunnelURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "gw.example.com", "ftp://gw", "https://"} {
		if _, err := tunnelURL(bad); err == nil {
			t.Errorf("tunnelURL(%q) accepted", bad)
		}
	}
}

func TestClusterOfToken(t *testing.T) {
	// header {"alg":"EdDSA"}, payload {"warren":{"clusters":["prod"]}}: only the claim matters here.
	const tok = "eyJhbGciOiJFZERTQSJ9.eyJ3YXJyZW4iOnsiY2x1c3RlcnMiOlsicHJvZCJdfX0.c2ln"
	if c, err := clusterOfToken(tok); err != nil || c != "prod" {
		t.Fatalf("clusterOfToken = %q, %v", c, err)
	}
	if _, err := clusterOfToken("garbage"); err == nil || err.Error() != "connector token is not a JWT: token is malformed: token contains an invalid number of segments" {
		t.Fatalf("garbage token: %v", err)
	}
}

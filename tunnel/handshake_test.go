package tunnel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestRefusedHandshakeCarriesReason(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		base, client := tr.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"connector token expired at 2026-01-01T00:00:00Z","code":401}`)
		}))
		_, err := Dial(context.Background(), base+"/connect", DialOptions{HTTPClient: client})
		var he *HandshakeError
		if !errors.As(err, &he) {
			t.Fatalf("Dial error = %v, want a *HandshakeError", err)
		}
		if he.StatusCode != 401 || he.Message != "connector token expired at 2026-01-01T00:00:00Z" || he.RetryAfter != 7*time.Second {
			t.Fatalf("HandshakeError = %+v", he)
		}
	})
}

func TestUpgradeRefusesPlainRequests(t *testing.T) {
	r := httptest.NewRequest("GET", "/connect", nil)
	w := httptest.NewRecorder()
	if _, err := Upgrade(w, r, Config{}); !errors.Is(err, ErrNotTunnel) {
		t.Fatalf("Upgrade error = %v, want ErrNotTunnel", err)
	}
	if w.Body.Len() != 0 || w.Code != 200 {
		t.Fatalf("Upgrade wrote %d %q; it must leave the answer to the caller", w.Code, w.Body.String())
	}
}

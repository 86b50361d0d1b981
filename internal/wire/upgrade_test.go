package wire

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
)

// TestUpgradeMatchesReverseProxy checks Upgrade against what httputil.ReverseProxy really forwards: for each
// header set, a ReverseProxy sends the request to a backend that records the Upgrade and Connection it received.
func TestUpgradeMatchesReverseProxy(t *testing.T) {
	cases := []struct {
		name     string
		h        http.Header
		want     string
		ws, spdy bool
	}{
		{"websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, "websocket", true, false},
		{"case", http.Header{"Connection": {"keep-alive, UPGRADE"}, "Upgrade": {"WebSocket"}}, "WebSocket", true, false},
		{"spdy", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}}, "SPDY/3.1", false, true},
		{"no connection token", http.Header{"Upgrade": {"websocket"}}, "", false, false},
		{"connection upgrades substring", http.Header{"Connection": {"upgrades"}, "Upgrade": {"websocket"}}, "", false, false},
		{"websocket list", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket, foo"}}, "websocket, foo", false, false},
		{"spdy list", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1, websocket"}}, "SPDY/3.1, websocket", false, true},
		{"two lines", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"foo", "websocket"}}, "foo", false, false},
		{"h2c", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}, "h2c", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var gotUpgrade, gotConn string
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotUpgrade, gotConn = r.Header.Get("Upgrade"), r.Header.Get("Connection")
				w.WriteHeader(http.StatusNoContent)
			}))
			defer backend.Close()
			u, _ := url.Parse(backend.URL)
			proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(u))
			defer proxy.Close()
			req, _ := http.NewRequest("GET", proxy.URL, nil)
			for k, vs := range c.h {
				req.Header[k] = vs
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := Upgrade(c.h); got != c.want {
				t.Errorf("Upgrade = %q, want %q", got, c.want)
			}
			if gotUpgrade != c.want {
				t.Errorf("the ReverseProxy forwarded Upgrade %q (Connection %q); Upgrade says %q", gotUpgrade, gotConn, c.want)
			}
			if IsWebSocket(c.h) != c.ws || IsSPDY(c.h) != c.spdy {
				t.Errorf("IsWebSocket = %v, IsSPDY = %v; want %v, %v", IsWebSocket(c.h), IsSPDY(c.h), c.ws, c.spdy)
			}
		})
	}
}

package wire

import (
	"net/http"
	"slices"
	"testing"
)

func TestStripIdentityHeaders(t *testing.T) {
	h := http.Header{
		"X-Remote-User":           {"system:admin"},
		"X-Remote-Group":          {"system:masters"},
		"X-Remote-Uid":            {"0"},
		"X-Remote-Extra-Scopes":   {"all"},
		"x-remote-user":           {"lowercase, not canonical"},
		"X-REMOTE-EXTRA-X":        {"upper"},
		"X-Forwarded-User":        {"alice"},
		"X-Forwarded-For":         {"10.0.0.1"},
		"X-Forwarded-Client-Cert": {"By=spiffe://x"},
		"X-Real-Ip":               {"10.0.0.1"},
		"Forwarded":               {"for=10.0.0.1"},
		"X-My-User":               {"configured"},
		// Kept: what the API server needs, and look-alikes that are not these headers.
		"Accept":                    {"application/json"},
		"Impersonate-User":          {"alice"},
		"X-Remote":                  {"not a prefix match"},
		"X-Remote-Userx":            {"another header"},
		"X_Remote_User":             {"underscores: another header to Go and to the API server"},
		"Warren-Request-Id":         {"1"},
		"X-Stream-Protocol-Version": {"v4.channel.k8s.io"},
	}
	StripIdentityHeaders(h, append(slices.Clone(IdentityHeaders), "X-My-User"))
	var kept []string
	for k := range h {
		kept = append(kept, k)
	}
	slices.Sort(kept)
	want := []string{"Accept", "Impersonate-User", "Warren-Request-Id", "X-Remote", "X-Remote-Userx", "X-Stream-Protocol-Version", "X_Remote_User"}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept %q, want %q", kept, want)
	}
}

func TestValidHeaderPattern(t *testing.T) {
	for n, want := range map[string]bool{"X-Remote-User": true, "X-Auth-*": true, "x_y": true, "": false, "*": false,
		"X Remote": false, "X-Remote:": false, "X-*-Y": false, "X-Remote-\n": false} {
		if got := ValidHeaderPattern(n); got != want {
			t.Errorf("ValidHeaderPattern(%q) = %v, want %v", n, got, want)
		}
	}
}

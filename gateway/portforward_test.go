package gateway

import (
	"net/http/httptest"
	"testing"

	"github.com/warren-dev/warren/auth"
)

// TestIsPortForward: the sessions whose SPDY farewell is port-forward's (text on the error streams) rather than
// exec's (a Status): pods/portforward and the kubelet's portForward through nodes/proxy, and nothing else. (A
// nodes/proxy port-forward used to be told goodbye as an exec.)
func TestIsPortForward(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/api/v1/namespaces/ns/pods/p/portforward", true},
		{"/api/v1/nodes/n1/proxy/portForward/ns/p", true},
		{"/api/v1/nodes/n1/proxy/portForward/ns/p/uid", true},
		{"/api/v1/namespaces/ns/pods/p/exec", false},
		{"/api/v1/namespaces/ns/pods/p/attach", false},
		{"/api/v1/nodes/n1/proxy/exec/ns/p/c", false},
		{"/api/v1/nodes/n1/proxy/attach/ns/p/c", false},
		{"/api/v1/nodes/portForward/proxy/exec/ns/p/c", false}, // a node named portForward
		{"/apis/example.com/v1/namespaces/ns/pods/p/portforward", false},
	} {
		r := httptest.NewRequest("POST", c.path, nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "SPDY/3.1")
		a, err := auth.Classify(r, c.path)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if got := isPortForward(a); got != c.want {
			t.Errorf("%s (%s): port-forward %v, want %v", c.path, a.CombinedResource(), got, c.want)
		}
	}
}

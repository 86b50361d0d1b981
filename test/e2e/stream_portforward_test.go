package e2e

import (
	"testing"

	"github.com/warren-dev/warren/audit"
)

// TestStreamPortForwardClientGo forwards a local port to a pod's port (the fake kubelet dials 127.0.0.1:port, where
// the test's HTTP server listens) with each client-go dialer: SPDY (POST), SPDY tunnelled in WebSocket (GET,
// subprotocol "SPDY/3.1+portforward.k8s.io") and the fallback dialer, and drives HTTP through it.
func TestStreamPortForwardClientGo(t *testing.T) {
	e := newStreamEnv(t)
	ps := startPodServer(t)
	for _, kind := range dialerKinds {
		t.Run(kind.name, func(t *testing.T) {
			pod := sleeper(t).Name
			f := forward(t, kind.new(t, e.cfg, portForwardURL(e.cs, pod)), ps.port)
			checkForwardedHTTP(t, f.local, ps)
			f.stop()
			if f.err != nil {
				t.Fatalf("ForwardPorts returned %v after stop", f.err)
			}
			rec := e.gwAudit.wait(t, "port-forward", func(r audit.Record) bool { return r.Subresource == "portforward" && r.Name == pod })
			checkUpgradeRecord(t, rec, kind.method, "portforward")
			// 10 MB each way went through this one upgraded connection.
			if rec.BytesIn < 10<<20 || rec.BytesOut < 10<<20 {
				t.Fatalf("gateway counted %d bytes in, %d out; want at least 10 MiB each way", rec.BytesIn, rec.BytesOut)
			}
			t.Logf("%s: gateway bytes in/out %d/%d", kind.name, rec.BytesIn, rec.BytesOut)
		})
	}
}

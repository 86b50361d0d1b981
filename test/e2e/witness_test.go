package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/warren-dev/warren/audit"
)

// TestExecStdoutWitness: the connector's audit record of an exec session carries the SHA-256 and byte count of the
// session's stdout, equal to what the client received, over WebSocket and SPDY, and the gateway's Audit-ID went on
// to the connector's record too.
func TestExecStdoutWitness(t *testing.T) {
	e := newStreamEnv(t)
	pod := imagePod(t, "witness", "busybox", "exec sleep 3600", nil)
	for _, kind := range executorKinds[:2] {
		t.Run(kind.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// 3 MB of random stdout, some stderr, and stdin that must not count.
			res := e.runExec(ctx, t, kind, pod.Name, []string{"sh", "-c", "head -c 3000000 /dev/urandom; echo oops >&2"}, nil)
			if res.err != nil || len(res.stdout) != 3000000 {
				t.Fatalf("exec: %v, %d bytes", res.err, len(res.stdout))
			}
			want := sha256hex([]byte(res.stdout))
			rec := e.connAudit.wait(t, "the exec", func(r audit.Record) bool {
				return r.Subresource == "exec" && r.Name == pod.Name && r.Method == kind.method // one exec per method
			})
			if rec.StdoutSHA256 != want || rec.StdoutBytes != 3000000 {
				t.Fatalf("connector witness %d bytes %s, the client got %d bytes %s", rec.StdoutBytes, rec.StdoutSHA256, len(res.stdout), want)
			}
			gw := e.gwAudit.wait(t, "the exec at the gateway", func(r audit.Record) bool { return r.RequestID == rec.RequestID })
			if gw.AuditID == "" || gw.AuditID != rec.AuditID || gw.AuditID != gw.RequestID {
				t.Fatalf("Audit-ID: gateway %q (request %q), connector %q", gw.AuditID, gw.RequestID, rec.AuditID)
			}
		})
	}
}

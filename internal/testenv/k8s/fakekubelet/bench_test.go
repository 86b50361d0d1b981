package fakekubelet

import (
	"context"
	"io"
	"testing"
)

// BenchmarkExec measures the start latency of an exec of `true` in a busybox container: "start" is the runtime
// alone (join the container's namespaces on a locked thread, take its user and capabilities, fork, wait), "api" the
// whole kubelet API round trip over SPDY (TLS, streams, Status).
func BenchmarkExec(b *testing.B) {
	tk := startTestKubelet(b)
	pod := tk.runPod(b, sleeper("bench", "busybox"))
	c := tk.k.podState("default/" + pod.Name).container("main")
	b.Run("start", func(b *testing.B) {
		for b.Loop() {
			if err := c.exec(context.Background(), []string{"true"}, nil, io.Discard, io.Discard, false, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("api", func(b *testing.B) {
		for b.Loop() {
			if r := tk.exec(b, pod.Name, "main", "", "true"); r.code != 0 || r.err != nil {
				b.Fatal(r)
			}
		}
	})
}

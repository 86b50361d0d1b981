package e2e

// Benchmarks of acquisition (make bench-acquire, or go test ./test/e2e -run XXX -bench BenchmarkAcquire -benchtime 1x):
// the rate of one 1 GiB target through exec over the tunnel against a plain bulk GET of 1 GiB along the same path
// in the same run, the time to the first byte of evidence, and 200 small pods at --parallel 50 with the memory of
// the acquirer, the gateway and the connector, each its own process.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// firstByte is an acquire.Observer that notes when the first target's archive got its first byte.
type firstByte struct {
	acquire.Observer
	mu    sync.Mutex
	first time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

func (f *firstByte) Started(_ acquire.TargetInfo, p *acquire.Progress) {
	f.wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
			if p.Bytes() > 0 {
				f.mu.Lock()
				if f.first.IsZero() {
					f.first = time.Now()
				}
				f.mu.Unlock()
				return
			}
		}
	})
}

func (f *firstByte) close() time.Time {
	close(f.stop)
	f.wg.Wait()
	return f.first
}

type nopObs struct{}

func (nopObs) Planned([]acquire.TargetInfo)                      {}
func (nopObs) Started(acquire.TargetInfo, *acquire.Progress)     {}
func (nopObs) Finished(acquire.TargetInfo, evidence.IndexTarget) {}
func (nopObs) Warn(string)                                       {}

// BenchmarkAcquireThroughput: one container holding a 1 GiB file, acquired with the full profile over exec
// through the gateway and the tunnel, against a plain bulk GET of 1 GiB along the same path (the same container's
// 1 GiB log: gateway, tunnel, connector, API server, kubelet), in the same run. Reports both rates, their ratio and
// the time to the first byte of evidence.
func BenchmarkAcquireThroughput(b *testing.B) {
	e := newStreamEnv(b)
	needAcquire(b)
	const size = 1 << 30
	// The image: busybox and a 1 GiB file, older than the container (a file changed since the container started is
	// copied as a recent one, capped at 8 MiB, before the full profile's pass).
	needKubelet(b)
	cached, err := cachedImageDir()
	if err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(fakeKubelet.images, "bench-big")
	if out, err := exec.Command("cp", "-a", filepath.Join(cached, "busybox"), img).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v %s", err, out)
	}
	b.Cleanup(func() { os.RemoveAll(img) })
	big, err := os.Create(filepath.Join(img, "rootfs", "big.bin"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := payload(1 << 20)
	for range size >> 20 {
		big.Write(chunk)
	}
	big.Close()
	// The collector copies a file changed since the container started as a recent one (capped at 8 MiB), and
	// tells the container's start from its processes' start times, known to about a second (the kernel's boot time
	// is whole seconds): the file must be older than that.
	time.Sleep(2 * time.Second)
	pod := imagePod(b, "bench-big", "warren.test/bench-big",
		fmt.Sprintf("dd if=/dev/zero bs=1M count=%d 2>/dev/null; touch /tmp/done; exec sleep infinity", size>>20), nil)
	wait.Until(b, 5*time.Minute, "the container's 1 GiB file and log", func() bool {
		res := e.runExec(context.Background(), b, executorKinds[1], pod.Name, []string{"test", "-e", "/tmp/done"}, nil)
		return res.err == nil
	})
	var getSum, acqSum, firstSum float64
	var archive int64
	runs := 0
	for b.Loop() {
		runs++
		// The bulk GET: the container's log, 1 GiB.
		start := time.Now()
		rc, err := e.cs.CoreV1().Pods(streamNS).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "main"}).Stream(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != size {
			b.Fatalf("log: %d bytes, %v", n, err)
		}
		getRate := float64(n) / time.Since(start).Seconds() / 1e6

		store, err := evidence.NewLocalStore(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		fb := &firstByte{Observer: nopObs{}, stop: make(chan struct{})}
		cfg := acquire.Config{REST: e.presetConfig(b), Cluster: streamCluster, Store: store, Signer: acqShared.signer, Namespace: streamNS,
			Pods: []string{pod.Name}, CollectorDir: acqShared.collectorDir, Profile: "full", MaxBytes: 2 << 30, MaxLogBytes: 1 << 20,
			TimeBudget: 10 * time.Minute, Observer: fb}
		start = time.Now()
		sum, err := acquire.Run(context.Background(), cfg)
		elapsed := time.Since(start)
		first := fb.close()
		if err != nil || sum.Failed != 0 {
			b.Fatalf("acquire: %v %+v", err, sum)
		}
		archive = sum.Index.Targets[0].Bytes
		getSum += getRate
		acqSum += float64(archive) / elapsed.Seconds() / 1e6
		firstSum += float64(first.Sub(start).Milliseconds())
	}
	n := float64(runs)
	b.ReportMetric(getSum/n, "get-MB/s")
	b.ReportMetric(acqSum/n, "acquire-MB/s")
	b.ReportMetric(acqSum/getSum, "ratio")
	b.ReportMetric(firstSum/n, "first-byte-ms")
	b.ReportMetric(float64(archive)/(1<<20), "archive-MiB")
}

// BenchmarkAcquire200Pods: 200 small pods acquired by `warren acquire --parallel 50` with one token, through a
// `warren gateway` (default limits) and a `warren connector`, each its own process. Reports the wall time and the
// peak memory (VmHWM) of the three.
func BenchmarkAcquire200Pods(b *testing.B) {
	needAcquire(b)
	const pods = 200
	label := uniqueName("b200")
	for i := range pods {
		labelPod(b, imagePod(b, fmt.Sprintf("b200-%d", i), "busybox", "", nil), "batch", label)
	}
	// An in-process gateway only lends its certificate; the binary serves on a port of its own.
	lender := startGateway(b, "127.0.0.1:0")
	lender.stop()
	certFile, keyFile := gatewayFiles(b, lender)
	pub := filepath.Join(keysDir, auth.PublicKeyFile)
	addr := freePort(b)
	gw := startProcess(b, "gateway", "gateway", "--listen", addr, "--tls-cert", certFile, "--tls-key", keyFile,
		"--issuer-keys", pub, "--connector-keys", pub, "--gateway-key", gatewayKeyFile(),
		"--audit-log", filepath.Join(b.TempDir(), "gateway-audit.jsonl"))
	waitHealthy(b, "https://"+addr, lender.caFile, 20*time.Second)
	tokenFile := filepath.Join(b.TempDir(), "connector.token")
	os.WriteFile(tokenFile, []byte(connectorToken(b, streamCluster)+"\n"), 0o600)
	conn := startProcess(b, "connector", "connector", "--gateway", "https://"+addr, "--token-file", tokenFile, "--ca-file", lender.caFile,
		"--kubeconfig", kube.ConnectorKubeconfig, "--name", "bench", "--state-dir", filepath.Join(b.TempDir(), "state"),
		"--gateway-keys", gatewayPubFile(), "--audit-log", filepath.Join(b.TempDir(), "connector-audit.jsonl"))
	presetTok := presetToken(b)
	// The cluster answers through the binaries once the connector has joined and dialled.
	reach := callerConfig(lender, streamCluster, presetTok)
	reach.Host = "https://" + addr + "/clusters/" + streamCluster
	cs := clientset(b, reach)
	wait.Until(b, 30*time.Second, "the cluster through the gateway and connector processes", func() bool {
		_, err := cs.Discovery().ServerVersion()
		return err == nil
	})
	for b.Loop() {
		out := filepath.Join(b.TempDir(), "case")
		cmd := exec.Command(warrenBinary(b), "acquire", "-l", "batch="+label, "--parallel", "50", "--out", out, "-n", streamNS,
			"--gateway", "https://"+addr, "--cluster", streamCluster, "--token", presetTok, "--ca-file", lender.caFile,
			"--signing-key", acqShared.keyFile, "--collector-dir", acqShared.collectorDir)
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("warren acquire: %v\n%s", err, log.String())
		}
		b.ReportMetric(time.Since(start).Seconds(), "wall-s")
		if !strings.Contains(log.String(), fmt.Sprintf("%d acquired, 0 kept from an earlier run, 0 failed", pods)) {
			b.Fatalf("warren acquire:\n%s", log.String())
		}
		b.ReportMetric(float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)/1024, "acquirer-MiB")
	}
	b.ReportMetric(vmHWM(b, gw.cmd.Process.Pid), "gateway-MiB")
	b.ReportMetric(vmHWM(b, conn.cmd.Process.Pid), "connector-MiB")
}

// vmHWM is a process's peak resident set, in MiB.
func vmHWM(b *testing.B, pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

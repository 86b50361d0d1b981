package fakekubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
)

const waitTimeout = 20 * time.Second

func TestMain(m *testing.M) {
	RunContainerInit() // the test binary is also the containers' init
	goleak.VerifyTestMain(m,
		// fixedSize.Next blocks forever by design; client-go's resize goroutine is left in it.
		goleak.IgnoreAnyFunction("github.com/warren-dev/warren/internal/testenv/k8s/fakekubelet.(*fixedSize).Next"),
		// spdystream hands a close error to nobody for up to 1 s after a connection closed, then exits.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// client-go's WebSocket client pings until a ping fails when the server closed without a close frame.
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"))
}

// testImageDirs are the images the tests run: the cache scripts/rootfs.sh fills, and a per-run directory for images
// a test makes itself.
func testImageDirs(t testing.TB) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("fakekubelet runs containers in namespaces of their own: run the tests as root")
	}
	dir, err := CacheImageDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{"busybox", "busybox-notools", "debian", "distroless"} {
		if _, err := os.Stat(filepath.Join(dir, img, "rootfs")); err != nil {
			t.Fatalf("image %s: %v: run scripts/rootfs.sh (WARREN_CACHE selects the cache)", img, err)
		}
	}
	return []string{dir}
}

// testKubelet is a Kubelet running against a fake clientset: the kubelet API is real (TLS, SPDY, WebSocket), the
// API server is not.
type testKubelet struct {
	k      *Kubelet
	client *fake.Clientset
	base   string // https://127.0.0.1:PORT
	rest   *rest.Config
	http   *http.Client
	stop   func() // stops the kubelet and waits for Run to return; idempotent, also run at cleanup
}

func startTestKubelet(t testing.TB) *testKubelet {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, certPEM, _, err := SelfSignedCertificate("test-node", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	k, err := New(Config{
		Client:      client,
		NodeName:    "test-node",
		Listener:    ln,
		Certificate: cert,
		RootDir:     t.TempDir(),
		ImageDirs:   testImageDirs(t),
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- k.Run(ctx) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tk := &testKubelet{
		k:      k,
		client: client,
		base:   "https://" + ln.Addr().String(),
		rest:   &rest.Config{Host: "https://" + ln.Addr().String(), TLSClientConfig: rest.TLSClientConfig{CAData: certPEM}},
		http:   &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
	var once sync.Once
	tk.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
			tk.http.CloseIdleConnections()
		})
	}
	t.Cleanup(tk.stop)
	select {
	case <-k.Ready():
	case err := <-runErr:
		runErr <- err
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("not ready in time")
	}
	return tk
}

// waitFor polls cond until it returns true, fails the test on error or after waitTimeout.
func waitFor(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tk *testKubelet) url(path string, query url.Values) *url.URL {
	u, err := url.Parse(tk.base + path)
	if err != nil {
		panic(err)
	}
	u.RawQuery = query.Encode()
	return u
}

func execQuery(stdin, tty bool, command ...string) url.Values {
	q := url.Values{"command": command, "output": {"1"}}
	if !tty {
		q.Set("error", "1")
	} else {
		q.Set("tty", "1")
	}
	if stdin {
		q.Set("input", "1")
	}
	return q
}

// executors are the ways a client reaches /exec and /attach: SPDY (POST) and WebSocket v4 (GET). Through an
// apiserver only SPDY arrives (it translates WebSocket v5), but a client may also talk WebSocket v4 directly.
var executors = []struct {
	name string
	new  func(tk *testKubelet, u *url.URL) (remotecommand.Executor, error)
}{
	{"spdy", func(tk *testKubelet, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(tk.rest, http.MethodPost, u)
	}},
	{"websocket", func(tk *testKubelet, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutorForProtocols(tk.rest, http.MethodGet, u.String(),
			"v4.channel.k8s.io")
	}},
}

type fixedSize struct{ sent bool }

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	if f.sent {
		select {} // one size is enough; the executor stops calling when the stream ends
	}
	f.sent = true
	return &remotecommand.TerminalSize{Width: 100, Height: 40}
}

func TestStreaming(t *testing.T) {
	// Registered first, so it runs after the kubelet has been stopped by startTestKubelet's cleanup.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, ignore,
			// fixedSize.Next blocks forever by design; client-go's resize goroutine is left in it.
			goleak.IgnoreAnyFunction("github.com/warren-dev/warren/internal/testenv/k8s/fakekubelet.(*fixedSize).Next"),
			// spdystream hands a close error to nobody for up to 1 s after a connection closed, then exits.
			goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
			// client-go's WebSocket client pings until a ping fails when the server closed without a close frame.
			goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"))
	})
	tk := startTestKubelet(t)
	pod := tk.runPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "ticker", Image: "busybox", WorkingDir: "/srv/app", Command: []string{"sh", "-c",
				`echo made by main > made; echo first; echo oops >&2; printf 'part'; ` +
					`i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done`},
				Env: []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}},
			{Name: "reader", Image: "busybox", Stdin: true, Command: []string{"sh", "-c",
				`while read l; do echo "got: $l"; done`}},
		}},
	})
	if ip := pod.Status.PodIP; ip != "127.0.0.1" {
		t.Errorf("podIP = %q, want 127.0.0.1", ip)
	}
	node, err := tk.client.CoreV1().Nodes().Get(t.Context(), "test-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := node.Status.DaemonEndpoints.KubeletEndpoint.Port
	if want := tk.k.Addr().(*net.TCPAddr).Port; int(port) != want {
		t.Errorf("kubelet port = %d, want %d", port, want)
	}

	for _, ex := range executors {
		t.Run("exec/"+ex.name, func(t *testing.T) {
			for _, tc := range []struct {
				name             string
				path             string
				query            url.Values
				stdin            string
				tty              bool
				wantOut, wantErr string
				wantCode         int
				spdyOnly         bool // WebSocket v4 cannot half-close stdin (v5 can, but only the apiserver speaks it)
			}{
				{name: "exit code", path: "/exec/default/p/ticker",
					query:   execQuery(false, false, "sh", "-c", `echo out $GREETING; echo err >&2; exit 3`),
					wantOut: "out hi\n", wantErr: "err\n", wantCode: 3},
				{name: "stdin", path: "/exec/default/p/" + string(pod.UID) + "/ticker",
					query: execQuery(true, false, "cat"), stdin: "hello\nworld\n", wantOut: "hello\nworld\n",
					spdyOnly: true},
				{name: "stdin without EOF", path: "/exec/default/p/ticker",
					query: execQuery(true, false, "head", "-n1"), stdin: "hello\nworld\n", wantOut: "hello\n"},
				{name: "tty", path: "/exec/default/p/ticker", query: execQuery(false, true, "stty", "size"),
					tty: true, wantOut: "40 100\r\n"},
				{name: "working directory and files of the main process", path: "/exec/default/p/ticker",
					query:   execQuery(false, false, "sh", "-c", "pwd; cat made; echo x > f && cat /srv/app/f"),
					wantOut: "/srv/app\nmade by main\nx\n"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if tc.spdyOnly && ex.name != "spdy" {
						t.Skip("needs stdin half-close")
					}
					e, err := ex.new(tk, tk.url(tc.path, tc.query))
					if err != nil {
						t.Fatal(err)
					}
					var stdout, stderr bytes.Buffer
					opts := remotecommand.StreamOptions{Stdout: &stdout, Tty: tc.tty}
					if !tc.tty {
						opts.Stderr = &stderr
					} else {
						opts.TerminalSizeQueue = &fixedSize{}
					}
					if tc.stdin != "" {
						opts.Stdin = strings.NewReader(tc.stdin)
					}
					err = e.StreamWithContext(t.Context(), opts)
					code := 0
					// client-go has its own CodeExitError type (k8s.io/client-go/util/exec).
					var exitErr interface{ ExitStatus() int }
					if errors.As(err, &exitErr) {
						code = exitErr.ExitStatus()
					} else if err != nil {
						t.Fatalf("stream: %v", err)
					}
					if code != tc.wantCode || stdout.String() != tc.wantOut || stderr.String() != tc.wantErr {
						t.Errorf("got code %d stdout %q stderr %q, want %d %q %q", code, stdout.String(),
							stderr.String(), tc.wantCode, tc.wantOut, tc.wantErr)
					}
				})
			}
		})

		t.Run("attach/"+ex.name, func(t *testing.T) {
			e, err := ex.new(tk, tk.url("/attach/default/p/reader", url.Values{"input": {"1"}, "output": {"1"},
				"error": {"1"}}))
			if err != nil {
				t.Fatal(err)
			}
			stdinR, stdinW := io.Pipe()
			stdout := &notifyBuffer{want: "got: ping\n", found: make(chan struct{})}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				done <- e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdinR, Stdout: stdout,
					Stderr: io.Discard})
			}()
			if _, err := stdinW.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-stdout.found:
			case err := <-done:
				t.Fatalf("attach ended early: %v, output %q", err, stdout.String())
			case <-time.After(waitTimeout):
				t.Fatalf("no echo through attach, output %q", stdout.String())
			}
			cancel() // the client goes: the session must end on both sides
			stdinW.Close()
			<-done
		})
	}

	t.Run("logs", func(t *testing.T) {
		get := func(t *testing.T, query string) string {
			t.Helper()
			resp, err := tk.http.Get(tk.base + "/containerLogs/default/p/ticker?" + query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			return string(body)
		}
		waitFor(t, "a few ticks", func() (bool, error) {
			return strings.Contains(get(t, ""), "tick 3\n"), nil
		})
		// stdout and stderr are separate pipes: their relative order in the log is not defined.
		if all := get(t, ""); !strings.Contains(all, "first\n") || !strings.Contains(all, "oops\n") ||
			!strings.Contains(all, "parttick 1\n") {
			t.Errorf("full log = %q, want first, oops, and the partial line joined", all)
		}
		if got := get(t, "stream=Stderr"); got != "oops\n" {
			t.Errorf("stderr log = %q", got)
		}
		if got := get(t, "tailLines=1"); !strings.HasPrefix(got, "tick ") || strings.Count(got, "\n") != 1 {
			t.Errorf("tailLines=1 gave %q", got)
		}
		if got := get(t, "stream=Stdout&limitBytes=4"); got != "firs" {
			t.Errorf("limitBytes=4 gave %q", got)
		}
		got := get(t, "timestamps=true&tailLines=1")
		ts, _, _ := strings.Cut(got, " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("timestamps=true gave %q: %v", got, err)
		}
		// follow: new lines keep coming after what was there.
		resp, err := tk.http.Get(tk.base + "/containerLogs/default/p/ticker?follow=true&tailLines=0")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 256)
		for !strings.Contains(string(buf), "\ntick ") {
			n, err := resp.Body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				t.Fatalf("follow: %v after %q", err, buf)
			}
		}
		resp.Body.Close()
	})

	t.Run("portforward", func(t *testing.T) {
		echo := startEchoServer(t)
		transport, upgrader, err := spdy.RoundTripperFor(tk.rest)
		if err != nil {
			t.Fatal(err)
		}
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost,
			tk.url("/portForward/default/p", nil))
		stop, ready := make(chan struct{}), make(chan struct{})
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(echo)},
			stop, ready, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- fw.ForwardPorts() }()
		defer func() { close(stop); <-done }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("port-forward: %v", err)
		}
		ports, err := fw.GetPorts()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // two connections over one forward
			c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(ports[0].Local)))
			if err != nil {
				t.Fatal(err)
			}
			msg := fmt.Sprintf("hello %d", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != msg {
				t.Errorf("echo through port-forward = %q, %v; want %q", got, err, msg)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{http.MethodPost, "/exec/default/nope/ticker?command=true&output=1", http.StatusNotFound},
			{http.MethodPost, "/exec/default/p/wrong-uid/ticker?command=true&output=1", http.StatusNotFound},
			{http.MethodPost, "/exec/default/p/nope?command=true&output=1", http.StatusNotFound},
			{http.MethodPost, "/exec/default/p/ticker?command=true", http.StatusBadRequest}, // no stream asked for
			{http.MethodPut, "/exec/default/p/ticker?command=true&output=1", http.StatusMethodNotAllowed},
			{http.MethodGet, "/containerLogs/default/p/nope", http.StatusNotFound},
			{http.MethodGet, "/containerLogs/default/p/ticker?previous=true", http.StatusBadRequest},
			{http.MethodGet, "/containerLogs/default/p/ticker?tailLines=x", http.StatusBadRequest},
			{http.MethodPost, "/containerLogs/default/p/ticker", http.StatusMethodNotAllowed},
			{http.MethodGet, "/portForward/default/nope", http.StatusNotFound},
		} {
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, tk.base+tc.path, nil)
			resp, err := tk.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		local := tk.k.podState("default/p")
		pid := local.containers["ticker"].cmd.Pid
		// What the apiserver does on a graceful delete: set deletionTimestamp. The kubelet finishes the delete.
		pods := tk.client.CoreV1().Pods("default")
		p, err := pods.Get(t.Context(), "p", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, new(int64)
		if _, err := pods.Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "pod deleted", func() (bool, error) {
			_, err := pods.Get(t.Context(), "p", metav1.GetOptions{})
			return apierrors.IsNotFound(err), client(err)
		})
		select {
		case <-local.containers["ticker"].done:
		case <-time.After(waitTimeout):
			t.Fatal("process still running")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d: kill 0 = %v, want ESRCH", pid, err)
		}
		if _, err := os.Stat(local.dir); !os.IsNotExist(err) {
			t.Errorf("pod directory: %v, want it removed", err)
		}
	})
}

// TestExitedContainer checks the status and logs of a pod whose container ends.
func TestExitedContainer(t *testing.T) {
	tk := startTestKubelet(t)
	pods := tk.client.CoreV1().Pods("default")
	_, err := pods.Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "job", Namespace: "default", UID: "uid-job"},
		Spec: corev1.PodSpec{NodeName: "test-node", RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sh", "-c", "echo done; exit 7"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitFor(t, "pod Failed", func() (bool, error) {
		pod, err = pods.Get(t.Context(), "job", metav1.GetOptions{})
		return err == nil && pod.Status.Phase == corev1.PodFailed, client(err)
	})
	term := pod.Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 7 || term.Reason != "Error" {
		t.Errorf("container state = %+v, want terminated with code 7", pod.Status.ContainerStatuses[0].State)
	}
	// follow ends by itself once the container has exited.
	resp, err := tk.http.Get(tk.base + "/containerLogs/default/job/c?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "done\n" {
		t.Errorf("logs = %q, %v", body, err)
	}
}

// client passes on errors other than NotFound.
func client(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// notifyBuffer closes found once its contents contain want.
type notifyBuffer struct {
	want  string
	found chan struct{}

	mu   sync.Mutex
	buf  bytes.Buffer
	once sync.Once
}

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.want) {
		b.once.Do(func() { close(b.found) })
	}
	return len(p), nil
}

func (b *notifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startEchoServer serves TCP echo on a loopback port until the test ends and returns the port.
func startEchoServer(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestCapabilitiesAsContainerd: the spec's capabilities are applied as containerd's CRI applies them: ALL first
// (added: every one; dropped: none), then the named additions, then the named drops.
func TestCapabilitiesAsContainerd(t *testing.T) {
	names := func(caps uint64) []string {
		var out []string
		for i, n := range capNames {
			if caps&(1<<i) != 0 {
				out = append(out, n)
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		caps *corev1.Capabilities
		want []string
	}{
		{"drop ALL, add two", &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"SYS_PTRACE", "DAC_READ_SEARCH"}},
			[]string{"DAC_READ_SEARCH", "SYS_PTRACE"}},
		{"drop ALL", &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}, nil},
		{"add ALL, drop one", &corev1.Capabilities{Add: []corev1.Capability{"ALL"}, Drop: []corev1.Capability{"CHOWN"}}, capNames[1:]},
		{"add one, drop it", &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"NET_ADMIN", "KILL"}},
			[]string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP"}},
	} {
		caps, err := capabilities(false, c.caps)
		if got := names(caps); err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		}
	}
}

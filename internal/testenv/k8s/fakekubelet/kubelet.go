// Package fakekubelet is a kubelet stand-in for tests against a real kube-apiserver without a node agent or a
// container runtime. It registers a Node whose kubelet endpoint is itself, runs the pods bound to that node (there
// is no scheduler: pods set spec.nodeName) in containers of its own, reports their status, and serves the kubelet's
// streaming API (/exec, /attach, /portForward, /containerLogs) with the upstream code, so that kubectl exec, attach,
// port-forward, logs and cp work end to end through the apiserver. It must run as root, on Linux.
//
// # Containers
//
// Each container runs in its own mount and PID namespace; the containers of a pod share a UTS namespace (the pod's
// hostname) and an IPC namespace, as a pod sandbox's; all of them share the node's network namespace, so that
// port-forward reaches a pod's port on 127.0.0.1 and a pod's IP is the node's. The container's command (from its
// image's config and the spec, $(VAR) expanded) is PID 1 of its namespace: as in a real container it ignores
// SIGTERM unless it handles it, and when it exits the kernel ends every process in the namespace. Its root is
// pivot_root'ed into an overlay of the image (read-only, shared) and the container's own upper directory; /proc is
// its own (its PID namespace's), with containerd's masked and read-only paths; /dev a tmpfs with the usual nodes
// and its own /dev/pts; /dev/shm, /dev/mqueue and a read-only /sys; the kubelet's /etc/hosts, /etc/hostname,
// /etc/resolv.conf (the node's) and termination message file. Its environment is only what a real one has:
// HOSTNAME, the image's variables (PATH), the spec's env and envFrom (fieldRef, secretKeyRef and configMapKeyRef
// read from the API), HOME as runc sets it, TERM=xterm with a terminal. It runs as the image's user or the
// securityContext's runAsUser and runAsGroup (container first, then pod), with supplementalGroups and fsGroup, and
// runAsNonRoot refused as the kubelet refuses it (CreateContainerConfigError); with containerd's default
// capabilities (securityContext.capabilities add and drop, all of them when privileged), empty inheritable and
// ambient sets, and no_new_privs when allowPrivilegeEscalation is false.
//
// A pod asks for read-only and noexec mounts the Kubernetes way where there is one: readOnlyRootFilesystem, a
// volumeMount's readOnly (an emptyDir mounted readOnly at /tmp is a read-only /tmp); and with the annotation
// AnnotationTmpfs for empty tmpfs mounts with options, "/tmp:noexec" being a /tmp that refuses exec. Volumes:
// emptyDir (a directory, also for medium Memory), hostPath (bind-mounted with what is mounted below it; readOnly is
// recursive; HostToContainer and Bidirectional propagation), and secret, configMap, downwardAPI and projected
// volumes (the service account token the ServiceAccount admission plugin adds among them), each a read-only tmpfs
// holding the files in the layout of the kubelet's atomic writer (..data -> ..TIMESTAMP/). Their content comes from
// the API (a token from TokenRequest, bound to the pod); a missing Secret or ConfigMap gives placeholder files where
// the real kubelet would wait for it. hostPID and hostIPC put the containers in the node's namespaces. Ephemeral
// containers (pods/ephemeralcontainers) are started as the pod gains them, in their target's PID namespace when they
// name one (so /proc/PID/root of the target's processes is their root), with statuses, attach and logs.
//
// Exec joins the container's namespaces from a thread of the kubelet (setns) and starts the process there, as the
// container's user, in its working directory and environment, with a terminal of the container's own /dev/pts;
// the program is looked up as runc does, so a missing one fails with containerd's message through the kubelet:
// `failed to exec in container: failed to start exec "ID": OCI runtime exec failed: exec failed: unable to start
// container process: exec: "sh": executable file not found in $PATH: unknown` (an InternalError Status; kubectl
// prints it and exits 1). A container whose command cannot start is terminated with reason StartError, exit code
// 128 and runc's message, as on a node.
//
// # Images
//
// An image is a directory NAME/rootfs (with an optional NAME/config.json: Entrypoint, Cmd, Env, WorkingDir, User) in
// one of Config.ImageDirs, named by the last element of a reference's repository path: busybox:1.36 and
// registry.example/tools/busybox@sha256:... are both "busybox". scripts/rootfs.sh builds busybox, busybox-notools
// (no tar, no hashing tool), debian (bookworm minbase) and distroless (no shell: fakeapp, /etc/passwd) from
// Debian's packages. An unknown image is ErrImagePull. The status reports docker.io-style references and an image
// ID with the SHA-256 of the image directory.
//
// On the node, RootDir/pods/NAMESPACE_NAME_UID/containers/NAME/ holds a container's overlay directories
// (upper/ has its writes) and its pid file (its PID on the node), for tests that look from outside.
//
// # Not emulated
//
// No cgroups (no resource limits, requests or accounting; /sys/fs/cgroup is the node's), no network namespace (no
// pod IP of its own, ports shared with the node), no user namespaces, no seccomp, AppArmor or SELinux, no image
// registry, pulls, layers or snapshots (one overlay over a directory; node-level tools see no containerd state, no
// /run/containerd or /var/lib/containerd), no pod sandbox (pause) process and no shareProcessNamespace, no restarts
// (restartPolicy Always leaves an exited container terminated), no probes, no init containers, no sidecar
// containers, no resize of resources, no previous logs, no volume types but those listed (no PersistentVolumeClaims,
// CSI or NFS), no updates of Secret and ConfigMap volumes after start, no fsGroup ownership change of volumes, no
// Node heartbeat or Lease, no authentication of callers: it is for tests on loopback only.
package fakekubelet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
)

// DefaultNodeName is the node name used when Config.NodeName is empty.
const DefaultNodeName = "warren-node"

const (
	// defaultStopGrace is how long a process has after SIGTERM before SIGKILL, unless a pod's grace period is shorter.
	// It stays well under the 5 s that test harnesses wait before they SIGKILL us.
	defaultStopGrace = 2 * time.Second
	// workers is how many pods are synced at once; a pod being stopped waits for its grace period.
	workers = 4
	// streamIdleTimeout and streamCreationTimeout are the real kubelet's defaults.
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

// Config configures a Kubelet. Client, Listener and Certificate are required.
type Config struct {
	// Client talks to the API server with rights to create Nodes and to update and delete Pods (admin).
	Client kubernetes.Interface
	// NodeName is the Node to register and whose pods to run. Empty means DefaultNodeName.
	NodeName string
	// Listener is where the kubelet API is served with TLS. Its IP is published as the Node's InternalIP and must be
	// a specific address (not 0.0.0.0); its port as the kubelet endpoint. Run closes it.
	Listener net.Listener
	// Certificate is the serving certificate; it must be valid for the Listener's IP (see SelfSignedCertificate).
	Certificate tls.Certificate
	// RootDir holds the pods' directories (their volumes, and for each container its overlay directories, log and
	// pid file). It must be on a filesystem that can hold an overlay's upper directory (not overlayfs). Empty means
	// a temporary directory that Run removes when it returns.
	RootDir string
	// ImageDirs are searched in order for a pod's image: image "busybox" is the directory busybox in the first of
	// them that has busybox/rootfs (see image.go). CacheImageDir is where scripts/rootfs.sh builds them.
	ImageDirs []string
	// Logger receives operational logs. Nil discards them.
	Logger *slog.Logger
	// StopGrace caps the time between SIGTERM and SIGKILL when a pod or the kubelet stops. Zero means 2 s.
	StopGrace time.Duration
}

// Kubelet is the stand-in. Create it with New and start it with Run; Ready and Addr may be called concurrently.
type Kubelet struct {
	client   kubernetes.Interface
	nodeName string
	ln       net.Listener
	cert     tls.Certificate
	rootDir  string
	tempRoot bool // rootDir was created by Run and is removed when it returns
	images   *imageStore
	log      *slog.Logger
	grace    time.Duration
	nodeIP   net.IP
	port     int

	ready chan struct{} // closed once the Node is registered, pods are synced and the server is serving

	// ctx is Run's context: cancelled when the kubelet stops. Set by Run before anything reads it.
	ctx   context.Context
	queue workqueue.TypedRateLimitingInterface[string]

	watched  *watchedListener // wraps ln; set by Run
	sessions sync.WaitGroup   // exec, attach and port-forward handlers in progress; Add only under mu

	mu       sync.Mutex
	pods     map[string]*podState // by "namespace/name"; owned by the sync workers, read by the HTTP handlers
	stopping bool                 // no new sessions: stopServer is waiting for k.sessions
}

// New checks cfg and returns a Kubelet that is not yet running.
func New(cfg Config) (*Kubelet, error) {
	if cfg.Client == nil {
		return nil, errors.New("fakekubelet: Config.Client is required")
	}
	if cfg.Listener == nil {
		return nil, errors.New("fakekubelet: Config.Listener is required")
	}
	if len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("fakekubelet: Config.Certificate is required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("fakekubelet: containers need root (mount and PID namespaces, pivot_root, overlayfs): " +
			"run as root")
	}
	tcp, ok := cfg.Listener.Addr().(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		return nil, fmt.Errorf("fakekubelet: the listener must be bound to a specific IP address, not %s "+
			"(the apiserver dials the Node's InternalIP)", cfg.Listener.Addr())
	}
	k := &Kubelet{
		client:   cfg.Client,
		nodeName: cfg.NodeName,
		ln:       cfg.Listener,
		cert:     cfg.Certificate,
		rootDir:  cfg.RootDir,
		images:   &imageStore{dirs: append([]string(nil), cfg.ImageDirs...)},
		log:      cfg.Logger,
		grace:    cfg.StopGrace,
		nodeIP:   tcp.IP,
		port:     tcp.Port,
		ready:    make(chan struct{}),
		pods:     map[string]*podState{},
	}
	if k.nodeName == "" {
		k.nodeName = DefaultNodeName
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	if k.grace <= 0 {
		k.grace = defaultStopGrace
	}
	k.log = k.log.With("node", k.nodeName)
	return k, nil
}

// Addr is the address the kubelet API is served on.
func (k *Kubelet) Addr() net.Addr { return k.ln.Addr() }

// NodeName is the name of the registered Node.
func (k *Kubelet) NodeName() string { return k.nodeName }

// Ready is closed once the Node is registered, the pods already bound to it are being started and the API is served.
func (k *Kubelet) Ready() <-chan struct{} { return k.ready }

// Run registers the Node, serves the kubelet API and runs the node's pods until ctx is cancelled. Then it stops
// serving, kills every process it started (SIGTERM, then SIGKILL after the stop grace), waits for them and returns
// nil. It returns an error early if the Node cannot be registered or the pods cannot be watched. Call it once.
func (k *Kubelet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k.ctx = ctx
	defer k.ln.Close()

	if k.rootDir == "" {
		dir, err := os.MkdirTemp("", "fakekubelet-")
		if err != nil {
			return fmt.Errorf("fakekubelet: failed to create a root directory: %w", err)
		}
		k.rootDir, k.tempRoot = dir, true
	}
	if k.tempRoot {
		defer os.RemoveAll(k.rootDir)
	}

	srv := k.newServer()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(k.watched, "", "") }() // the certificate is in srv.TLSConfig

	if err := k.registerNode(ctx); err != nil {
		cancel()
		k.stopServer(srv, serveErr)
		return fmt.Errorf("fakekubelet: %w", err)
	}
	podsDone, err := k.runPods(ctx)
	if err != nil {
		cancel()
		k.stopServer(srv, serveErr)
		return fmt.Errorf("fakekubelet: %w", err)
	}
	k.log.Info("ready", "addr", k.ln.Addr().String(), "root_dir", k.rootDir, "image_dirs", k.images.dirs)
	close(k.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		serveErr <- err // for stopServer
		runErr = fmt.Errorf("fakekubelet: the kubelet API server stopped: %w", err)
	}
	// Cancelling ctx ends every request's context (BaseContext), which kills exec processes and ends attach, log
	// and port-forward sessions; the pods' processes are stopped by runPods.
	cancel()
	k.stopServer(srv, serveErr)
	k.log.Debug("kubelet API server stopped")
	<-podsDone
	k.log.Info("stopped")
	return runErr
}

// stopServer closes the listener and idle connections and waits (bounded) for the streaming sessions to end.
func (k *Kubelet) stopServer(srv *http.Server, serveErr chan error) {
	_ = srv.Close()
	k.watched.closeConns() // the hijacked ones, which srv.Close leaves open
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		k.log.Error("kubelet API server failed", "err", err)
	}
	k.mu.Lock()
	k.stopping = true
	k.mu.Unlock()
	done := make(chan struct{})
	go func() { k.sessions.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * drainTimeout):
		k.log.Warn("streaming sessions still open at shutdown")
	}
}

// CacheImageDir is where scripts/rootfs.sh builds the images:
// ${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/rootfs.
func CacheImageDir() (string, error) {
	cache := os.Getenv("WARREN_CACHE")
	if cache == "" {
		userCache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("failed to find the image cache (set WARREN_CACHE): %w", err)
		}
		cache = filepath.Join(userCache, "warren")
	}
	return filepath.Join(cache, "rootfs"), nil
}

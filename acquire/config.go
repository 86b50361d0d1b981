// Package acquire runs `warren acquire`: it finds the target containers through the gateway, asks the gateway and
// the connector whether the caller's token may exec into them before anything moves, collects each container
// (collector.Collect over pods/exec) and its Kubernetes-side evidence (the Pod, its owners, events, service account
// and what binds it, the Node, logs; all read-only), hashes everything it receives, and writes each target's
// archive and signed statement (package evidence), several targets at once. Every request carries an Audit-ID
// naming the acquisition (warren-acq-<id>-<n>), which the gateway's, the connector's and the kube-apiserver's audit
// logs show; the statements list them.
package acquire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/collectorpod"
)

func validImage(ref string) bool { return collectorpod.ValidImage(ref) }

// Config configures one acquisition run. DefaultConfig gives the defaults; Run applies them to zero fields.
type Config struct {
	// REST reaches the cluster through the gateway (client.Config.RESTConfig). Required.
	REST *rest.Config
	// Cluster names the cluster in statements; default: the <cluster> of REST.Host's /clusters/<cluster> path.
	Cluster string
	// Store receives the layout (evidence.LocalStore). Required.
	Store evidence.Store
	// Signer signs the statements (the examiner's key from `warren keygen`). Required.
	Signer *evidence.Signer

	// Targets: Pods names pods ("POD" or "POD/CONTAINER") in Namespace; or Selector (a label selector) or All
	// picks them in Namespace, or in every namespace with AllNamespaces. Container restricts every pod to one
	// container; default: every container of each pod.
	Namespace     string // default "default"
	AllNamespaces bool
	Pods          []string
	Selector      string
	All           bool
	Container     string

	// Case and Examiner go into every statement.
	Case, Examiner string
	// Profile is collector.ProfileTriage (default) or collector.ProfileFull.
	Profile string
	// Mode is how warren reaches containers: ModeAuto (default: exec, and where the container has no shell the
	// next of AllowModes that is consented to and permitted), ModeExec, ModeEphemeral or ModeNode.
	Mode string
	// AllowModes are the modes ModeAuto may use (DefaultAllowModes: exec, ephemeral); tried in the order exec,
	// ephemeral, node. The node mode is never used unless named here or in Mode.
	AllowModes []string
	// Consented are the modes whose lasting traces the examiner accepted before the run (`--allow-modes` given, or
	// `--mode` naming the mode); ConsentedBy says how, for the statements ("--allow-modes exec,ephemeral").
	Consented   []string
	ConsentedBy string
	// Confirm, when not nil, asks the examiner once per run before a mode not in Consented leaves its trace (what
	// says which): a terminal prompt. Nil: such a mode is not used.
	Confirm func(ctx context.Context, mode, what string) bool
	// CollectorImage is warren's collector image, pinned by digest (NAME@sha256:...), that the ephemeral and node
	// modes run; default DefaultCollectorImage (set when warren is built for a release).
	CollectorImage string
	// CollectorNamespace is where the node mode creates its collector pods; default "warren-acquire".
	CollectorNamespace string
	// NodeRuntimeDir, NodeContainerdRoot and NodeContainerdNamespace are where containerd keeps its running
	// containers' bundles and its root on the nodes, and its namespace of Kubernetes' containers; defaults
	// collector.DefaultRuntimeDir, DefaultContainerdRoot, DefaultContainerdNamespace (NodeLayouts has k3s's and
	// RKE2's).
	NodeRuntimeDir, NodeContainerdRoot, NodeContainerdNamespace string
	// StartTimeout bounds the wait for an ephemeral container or a collector pod to start running; default 2 minutes.
	StartTimeout time.Duration
	// Method is the collection method: collector.MethodAuto (default), MethodCollector or MethodShell.
	Method string
	// MaxBytes bounds the file content stored per target (collector.Options.MaxBytes; 0: its default, 2 GiB).
	MaxBytes int64
	// TimeBudget bounds the collection inside each container (0: collector's default, 10 minutes).
	TimeBudget time.Duration
	// MaxLogBytes bounds each container log stored (current and previous); default 64 MiB.
	MaxLogBytes int64
	// Parallel is how many targets are acquired at once; default 4.
	Parallel int
	// RedactEnv are added to collector.DefaultRedactEnv, for the container's environment and the Pod object's env.
	RedactEnv []*regexp.Regexp
	// CopySecrets copies mounted Secret and projected service-account token files (collector.Options.CopySecrets).
	CopySecrets bool
	// CollectorDir holds warren-collector-linux-<arch>. Required unless Method is collector.MethodShell.
	CollectorDir string
	// ExecProtocol is ProtocolAuto (default: WebSocket, SPDY when the WebSocket upgrade is not understood),
	// ProtocolWebSocket or ProtocolSPDY.
	ExecProtocol string
	// RequestTimeout bounds each plain request (everything but exec and logs); default 60 s.
	RequestTimeout time.Duration
	// RetryFor bounds how long an exec refused with 429 or 503 is tried again (honouring Retry-After); default 5
	// minutes.
	RetryFor time.Duration
	// QPS and Burst pace plain requests on the client side; default the gateway's default per-token limits
	// (limit.DefaultConfig), so that a run does not start by hitting them. 429s are honoured either way.
	QPS   float32
	Burst int

	// Observer is told of progress; nil: nothing.
	Observer Observer
	// Logger receives the run's logs; default: discard.
	Logger *slog.Logger
	// Version is warren's, for the statements.
	Version string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Modes and protocols.
const (
	ModeAuto      = "auto"
	ModeExec      = "exec"
	ModeEphemeral = "ephemeral"
	ModeNode      = "node"

	ProtocolAuto      = "auto"
	ProtocolWebSocket = "websocket"
	ProtocolSPDY      = "spdy"
)

// defaultCollectorImage is set by a release build (-ldflags -X ...acquire.defaultCollectorImage=NAME@sha256:...):
// the collector image built from the same source, whose binary's digest the collector's self-hash is checked
// against. A development build has none (give --collector-image).
var defaultCollectorImage string

// DefaultCollectorImage is the collector image this build of warren runs by default, or "".
func DefaultCollectorImage() string { return defaultCollectorImage }

// NodeLayout is where a distribution keeps containerd's state on its nodes.
type NodeLayout struct{ RuntimeDir, ContainerdRoot string }

// NodeLayouts are the known layouts: containerd's own (EKS, GKE, AKS, kubeadm, Bottlerocket's host containerd), k3s
// and RKE2 (their embedded containerd).
var NodeLayouts = map[string]NodeLayout{
	"containerd":   {collector.DefaultRuntimeDir, collector.DefaultContainerdRoot},
	"bottlerocket": {collector.DefaultRuntimeDir, collector.DefaultContainerdRoot},
	"k3s":          {"/run/k3s/containerd/io.containerd.runtime.v2.task", "/var/lib/rancher/k3s/agent/containerd"},
	"rke2":         {"/run/k3s/containerd/io.containerd.runtime.v2.task", "/var/lib/rancher/rke2/agent/containerd"},
}

// DefaultConfig returns the defaults, for flags and documentation.
func DefaultConfig() Config {
	lim := limit.DefaultConfig()
	return Config{
		Namespace:               "default",
		Profile:                 collector.ProfileTriage,
		Mode:                    ModeAuto,
		AllowModes:              DefaultAllowModes,
		CollectorImage:          defaultCollectorImage,
		CollectorNamespace:      "warren-acquire",
		NodeRuntimeDir:          collector.DefaultRuntimeDir,
		NodeContainerdRoot:      collector.DefaultContainerdRoot,
		NodeContainerdNamespace: collector.DefaultContainerdNamespace,
		StartTimeout:            2 * time.Minute,
		Method:                  collector.MethodAuto,
		MaxBytes:                collector.DefaultMaxBytes,
		TimeBudget:              collector.DefaultTimeBudget,
		MaxLogBytes:             64 << 20,
		Parallel:                4,
		ExecProtocol:            ProtocolAuto,
		RequestTimeout:          60 * time.Second,
		RetryFor:                5 * time.Minute,
		QPS:                     float32(lim.TokenRate),
		Burst:                   lim.TokenBurst,
		Now:                     time.Now,
	}
}

// ErrUsage is matched by the errors of a configuration that cannot run (`warren acquire` exits 2 for them).
var ErrUsage = errors.New("invalid acquisition")

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Namespace == "" {
		c.Namespace = d.Namespace
	}
	if c.Profile == "" {
		c.Profile = d.Profile
	}
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.Method == "" {
		c.Method = d.Method
	}
	if c.AllowModes == nil {
		c.AllowModes = d.AllowModes
	}
	if c.CollectorImage == "" {
		c.CollectorImage = d.CollectorImage
	}
	if c.CollectorNamespace == "" {
		c.CollectorNamespace = d.CollectorNamespace
	}
	if c.NodeRuntimeDir == "" {
		c.NodeRuntimeDir = d.NodeRuntimeDir
	}
	if c.NodeContainerdRoot == "" {
		c.NodeContainerdRoot = d.NodeContainerdRoot
	}
	if c.NodeContainerdNamespace == "" {
		c.NodeContainerdNamespace = d.NodeContainerdNamespace
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = d.MaxBytes
	}
	if c.TimeBudget == 0 {
		c.TimeBudget = d.TimeBudget
	}
	if c.MaxLogBytes <= 0 {
		c.MaxLogBytes = d.MaxLogBytes
	}
	if c.Parallel <= 0 {
		c.Parallel = d.Parallel
	}
	if c.ExecProtocol == "" {
		c.ExecProtocol = d.ExecProtocol
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.RetryFor <= 0 {
		c.RetryFor = d.RetryFor
	}
	if c.QPS == 0 {
		c.QPS, c.Burst = d.QPS, d.Burst
	}
	if c.Burst <= 0 {
		c.Burst = d.Burst
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Cluster == "" && c.REST != nil {
		if _, rest, ok := strings.Cut(c.REST.Host, "/clusters/"); ok {
			c.Cluster, _, _ = strings.Cut(rest, "/")
		}
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.REST == nil:
		return usage("no cluster to reach")
	case c.Store == nil:
		return usage("no output: give --out DIR")
	case c.Signer == nil:
		return usage("no signing key: give --signing-key (signing.key from warren keygen)")
	}
	kinds := 0
	if len(c.Pods) > 0 {
		kinds++
	}
	if c.Selector != "" {
		kinds++
	}
	if c.All {
		kinds++
	}
	switch {
	case kinds == 0:
		return usage("no targets: name pods (POD or POD/CONTAINER), or give -l SELECTOR or --all")
	case kinds > 1:
		return usage("give pod names, -l SELECTOR or --all, not several")
	case c.AllNamespaces && len(c.Pods) > 0:
		return usage("pod names need one namespace (-n NS), not --all-namespaces")
	}
	for _, p := range c.Pods {
		pod, container, hasContainer := strings.Cut(p, "/")
		if pod == "" || (hasContainer && (container == "" || strings.Contains(container, "/"))) {
			return usage("target %q: want POD or POD/CONTAINER", p)
		}
		if hasContainer && c.Container != "" && container != c.Container {
			return usage("target %q names container %q, -c says %q", p, container, c.Container)
		}
	}
	switch c.Profile {
	case collector.ProfileTriage, collector.ProfileFull:
	default:
		return usage("--profile %q: want triage or full", c.Profile)
	}
	switch c.Mode {
	case ModeAuto, ModeExec, ModeEphemeral, ModeNode:
	default:
		return usage("--mode %q: want auto, exec, ephemeral or node", c.Mode)
	}
	for _, m := range c.AllowModes {
		if !slices.Contains(modeOrder, m) {
			return usage("--allow-modes: unknown mode %q (want exec, ephemeral, node)", m)
		}
	}
	if c.Mode == ModeAuto && len(c.AllowModes) == 0 {
		return usage("--allow-modes is empty: auto has no mode to use")
	}
	if c.Mode == ModeEphemeral || c.Mode == ModeNode || (c.Mode == ModeAuto && (slices.Contains(c.AllowModes, ModeEphemeral) || slices.Contains(c.AllowModes, ModeNode))) {
		if c.CollectorImage != "" && !validImage(c.CollectorImage) {
			return usage("--collector-image %q: want an image pinned by digest, NAME@sha256:<64 hex digits> (the statement names exactly what ran)", c.CollectorImage)
		}
		if c.CollectorImage == "" && c.Mode != ModeAuto {
			return usage("--mode %s needs --collector-image (this build of warren has no default): warren's collector image, pinned by digest", c.Mode)
		}
	}
	for name, dir := range map[string]string{"--node-runtime-dir": c.NodeRuntimeDir, "--node-containerd-root": c.NodeContainerdRoot} {
		if !collector.CleanAbsDir(dir) {
			return usage("%s %q: want an absolute, clean directory", name, dir)
		}
	}
	if !collector.ValidContainerdID(c.NodeContainerdNamespace) {
		return usage("--node-containerd-namespace %q: not a containerd namespace", c.NodeContainerdNamespace)
	}
	switch c.Method {
	case collector.MethodAuto, collector.MethodCollector, collector.MethodShell:
	default:
		return usage("--method %q: want auto, collector or shell", c.Method)
	}
	switch c.ExecProtocol {
	case ProtocolAuto, ProtocolWebSocket, ProtocolSPDY:
	default:
		return usage("--exec-protocol %q: want auto, websocket or spdy", c.ExecProtocol)
	}
	if c.Method != collector.MethodShell && c.CollectorDir == "" {
		return usage("no --collector-dir: the directory of warren-collector-linux-<arch> (make build writes them next to warren)")
	}
	if c.TimeBudget < 0 {
		return usage("--time-budget must not be negative")
	}
	return nil
}

// Package acquire runs `warren acquire`: it finds the target containers through the gateway, asks the gateway and
// the connector whether the caller's token may exec into them before anything moves, collects each container
// (collector.Collect over pods/exec) and its Kubernetes-side evidence (the Pod, its owners, events, service account
// and what binds it, the Node, logs; all read-only), hashes everything it receives, and writes each target's
// archive and signed statement (package evidence), several targets at once. Every request carries an Audit-ID
// naming the acquisition (warren-acq-<id>-<n>), which the gateway's, the connector's and the kube-apiserver's audit
// logs show; the statements list them.
package acquire

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/limit"
)

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
	// Mode is how warren reaches containers: ModeAuto (default) or ModeExec; both mean exec in this version.
	Mode string
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
	ModeAuto = "auto"
	ModeExec = "exec"

	ProtocolAuto      = "auto"
	ProtocolWebSocket = "websocket"
	ProtocolSPDY      = "spdy"
)

// DefaultConfig returns the defaults, for flags and documentation.
func DefaultConfig() Config {
	lim := limit.DefaultConfig()
	return Config{
		Namespace:      "default",
		Profile:        collector.ProfileTriage,
		Mode:           ModeAuto,
		Method:         collector.MethodAuto,
		MaxBytes:       collector.DefaultMaxBytes,
		TimeBudget:     collector.DefaultTimeBudget,
		MaxLogBytes:    64 << 20,
		Parallel:       4,
		ExecProtocol:   ProtocolAuto,
		RequestTimeout: 60 * time.Second,
		RetryFor:       5 * time.Minute,
		QPS:            float32(lim.TokenRate),
		Burst:          lim.TokenBurst,
		Now:            time.Now,
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
	case ModeAuto, ModeExec:
	case "ephemeral", "node":
		return usage("--mode %s is not available in this version: use --mode exec (or auto)", c.Mode)
	default:
		return usage("--mode %q: want auto or exec", c.Mode)
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

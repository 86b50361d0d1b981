package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/evidence"
)

const acquireUsage = `usage:
  warren acquire [POD[/CONTAINER]...] --out DIR|s3://BUCKET/PREFIX (-n NS | --all-namespaces) [-l SELECTOR | --all] [-c CONTAINER]
                 (--kubeconfig F [--context C] | --gateway URL --cluster C (--token T | --token-file F | --token-command CMD)
                 [--ca-file F] [--pin sha256:B64]) --signing-key KEY [--case ID] [--examiner NAME] [--profile triage|full]
                 [--mode auto|exec|ephemeral|node] [--allow-modes LIST] [--collector-image NAME@sha256:D]
                 [--max-bytes N] [--time-budget D] [--parallel N] [--redact-env REGEX]
                 [--s3-endpoint URL] [--s3-path-style] [--s3-region R] [--staging-dir DIR] ...
      acquires every container of each target pod (or POD/CONTAINER) through the gateway: exit 0 when every target
      succeeded, 1 when any failed (the table and DIR/acquisition.json say which and why), 2 for usage errors
  warren acquire verify DIR|s3://BUCKET/PREFIX --key PUB [--s3-endpoint URL] [--s3-path-style] [--s3-region R]
      re-hashes every archive and file, checks every statement's signature; lists every failure, exit 1 on any
  warren acquire volume --root DIR (--container ID | --list) --out DIR --signing-key KEY
      a node's disk, offline: a container's file system and drift from a mounted volume's containerd root

The token needs the rules ` + "`warren token issue --preset acquire --namespace N`" + ` prints (acquire-ephemeral and
acquire-node add the ephemeral and node modes'). A target whose statement in DIR verifies is kept as it is: run the
same command again to finish an interrupted acquisition.

With --out s3://BUCKET/PREFIX the same layout goes to object storage (AWS credentials and region from the standard
chain): each object is staged in --staging-dir, then uploaded with its x-amz-checksum-sha256, which the store checks.
A failed upload keeps the staged copy; the same command run again uploads it rather than acquiring the target again.
`

// runAcquire implements `warren acquire`, `warren acquire verify` and `warren acquire volume`.
func runAcquire(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return runAcquireVerify(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "volume" {
		return runAcquireVolume(args[1:], stdout, stderr)
	}
	c := cli{name: "warren acquire", usage: acquireUsage + "\nflags of warren acquire:\n", signals: true}
	return runOptions(c, NewAcquireOptions(), args, stderr, func(ctx context.Context, rc acquire.RunConfig) error {
		// client-go reports, through klog, what an interrupted exec stream could not copy: expected, at debug level.
		klog.SetSlogLogger(slog.New(debugHandler{rc.Config.Logger.Handler()}))
		cfg, unlock, err := rc.Open(ctx, stdout)
		if err != nil {
			return acquireErr(err)
		}
		defer unlock()
		var in io.Reader
		if isTerminal(os.Stdin) && isTerminal(stderr) {
			in = os.Stdin
		}
		ui := newAcquireUI(stdout, stderr, in, isTerminal(stdout))
		cfg.Observer = ui
		if in != nil {
			cfg.Confirm = ui.Confirm // asks before a mode leaves a trace the examiner did not accept beforehand
		}
		sum, err := acquire.Run(ctx, cfg)
		ui.close()
		if err != nil {
			return acquireErr(err)
		}
		printSummary(stdout, sum, cfg.Store, rc.Output.Dest+rc.Output.VerifyArgs())
		if sum.Failed > 0 {
			return fmt.Errorf("%d of %d targets failed (the table above and %s say why); run the same command again to retry them",
				sum.Failed, len(sum.Index.Targets), cfg.Store.Location(evidence.IndexName))
		}
		return nil
	})
}

// AcquireOptions are the flags and POD arguments of `warren acquire`; Validate turns them into acquire.RunConfig.
type AcquireOptions struct {
	run                                                  acquire.RunConfig // flags bound to its fields where the types match
	pins, allowModes, nodeLayout, maxBytes, collectorDir string            // comma-separated, or to parse
	allowModesGiven                                      bool              // --allow-modes (or WARREN_ALLOW_MODES) given: consent
	redact                                               stringList
	pods                                                 []string
	log                                                  logOptions
}

// NewAcquireOptions returns the options with the library's defaults.
func NewAcquireOptions() *AcquireOptions {
	d := acquire.DefaultConfig()
	return &AcquireOptions{run: acquire.RunConfig{Config: d}, allowModes: strings.Join(d.AllowModes, ","), maxBytes: strconv.FormatInt(d.MaxBytes, 10)}
}

// AddFlags binds the options to fs.
func (o *AcquireOptions) AddFlags(fs *flag.FlagSet) {
	c, cc, d := &o.run.Config, &o.run.Client, acquire.DefaultConfig()
	fs.StringVar(&o.run.Output.Dest, "out", "", "output directory (created if missing), or s3://BUCKET/PREFIX; a rerun into the same one keeps the targets that verify")
	addOutputFlags(fs, &o.run.Output, true)
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "namespace of the target pods")
	fs.StringVar(&c.Namespace, "n", c.Namespace, "short for --namespace")
	fs.BoolVar(&c.AllNamespaces, "all-namespaces", false, "pick pods (-l or --all) in every namespace")
	fs.BoolVar(&c.AllNamespaces, "A", false, "short for --all-namespaces")
	fs.StringVar(&c.Selector, "selector", "", "acquire the pods matching this label selector")
	fs.StringVar(&c.Selector, "l", "", "short for --selector")
	fs.BoolVar(&c.All, "all", false, "acquire every pod of the namespace")
	fs.StringVar(&c.Container, "container", "", "acquire only this container of each pod (default: every container)")
	fs.StringVar(&c.Container, "c", "", "short for --container")
	fs.StringVar(&cc.Kubeconfig, "kubeconfig", "", "kubeconfig reaching the cluster through the gateway (warren kubeconfig writes one)")
	fs.StringVar(&cc.Context, "context", "", "context of --kubeconfig; default: its current context")
	addClientFlags(fs, cc) // or these instead of --kubeconfig
	fs.StringVar(&o.pins, "pin", "", "SPKI pins of the gateway's certificate or an intermediate, sha256:BASE64, comma-separated")
	fs.StringVar(&o.run.SigningKeyFile, "signing-key", "", "the examiner's Ed25519 key (signing.key from warren keygen): signs every statement")
	fs.StringVar(&c.Case, "case", "", "case id, in every statement")
	fs.StringVar(&c.Examiner, "examiner", "", "examiner's name, in every statement")
	fs.StringVar(&c.Profile, "profile", c.Profile, "triage (volatile state, configuration, persistence, small files) or full (triage, then the whole root filesystem up to --max-bytes)")
	fs.StringVar(&c.Mode, "mode", c.Mode, "how to reach the containers: auto (exec, and where a container has no shell the next of --allow-modes), exec, "+
		"ephemeral (an ephemeral container running the collector image: it cannot be removed from the pod) or node (a collector pod on the node reading containerd's state)")
	fs.StringVar(&o.allowModes, "allow-modes", o.allowModes, "modes auto may use, comma-separated, of exec, ephemeral, node; "+
		"giving it is consent to their lasting traces (without it, warren asks on a terminal before adding an ephemeral container, and never uses node)")
	fs.StringVar(&c.CollectorImage, "collector-image", c.CollectorImage, "warren's collector image, pinned by digest (NAME@sha256:...), for the ephemeral and node modes")
	fs.StringVar(&c.CollectorNamespace, "collector-namespace", c.CollectorNamespace, "namespace of the node mode's collector pods")
	fs.StringVar(&o.nodeLayout, "node-layout", "", "where the nodes keep containerd's state: containerd (default), k3s, rke2 or bottlerocket")
	fs.StringVar(&c.NodeRuntimeDir, "node-runtime-dir", "", "containerd's runtime v2 task directory on the nodes (default: the layout's, "+d.NodeRuntimeDir+")")
	fs.StringVar(&c.NodeContainerdRoot, "node-containerd-root", "", "containerd's root on the nodes (default: the layout's, "+d.NodeContainerdRoot+")")
	fs.StringVar(&c.NodeContainerdNamespace, "node-containerd-namespace", c.NodeContainerdNamespace, "containerd namespace of Kubernetes' containers")
	fs.DurationVar(&c.StartTimeout, "start-timeout", c.StartTimeout, "bound on the wait for an ephemeral container or collector pod to start")
	fs.StringVar(&c.Method, "method", c.Method, "collection method: auto (the collector where it can run, else shell), collector or shell")
	fs.StringVar(&o.maxBytes, "max-bytes", o.maxBytes, "bound on the file content stored per target: bytes, or a quantity such as 500Mi or 2Gi; 0 for the default, -1 for none")
	fs.DurationVar(&c.TimeBudget, "time-budget", c.TimeBudget, "bound on the collection inside each container; what is not reached is recorded as skipped")
	fs.IntVar(&c.Parallel, "parallel", c.Parallel, "targets acquired at once")
	fs.Var(&o.redact, "redact-env", "a regular expression of environment variable names whose values are redacted, besides the defaults; repeat for several")
	fs.BoolVar(&c.CopySecrets, "copy-secrets", false, "copy mounted Secret and service-account token files (by default they are listed, not copied)")
	fs.StringVar(&o.collectorDir, "collector-dir", "", "directory of warren-collector-linux-amd64/-arm64 (make build); default: the directory of this warren binary")
	fs.StringVar(&c.ExecProtocol, "exec-protocol", c.ExecProtocol, "exec protocol: auto (WebSocket, SPDY when WebSocket is not understood), websocket or spdy")
	o.log.addFlags(fs)
}

// ParseArgs parses flags and PODs in any order, as kubectl takes them; -n and --namespace (and the other short
// forms) are one setting.
func (o *AcquireOptions) ParseArgs(fs *flag.FlagSet, args []string) (err error) {
	if o.pods, err = parseInterleaved(fs, args, "n", "namespace", "A", "all-namespaces", "l", "selector", "c", "container"); err != nil {
		return err
	}
	o.allowModesGiven = flagGiven(fs, "allow-modes")
	return nil
}

// Validate checks the flags together and returns what acquire.RunConfig.Open opens and acquire.Run runs. It reads
// no key and reaches no cluster: Open does.
func (o *AcquireOptions) Validate() (acquire.RunConfig, error) {
	rc := o.run
	c, cc := &rc.Config, &rc.Client
	c.Pods = o.pods
	log, err := o.log.logger()
	if err != nil {
		return rc, err
	}
	switch {
	case rc.Output.Dest == "":
		return rc, usageErr("missing --out: the output directory, e.g. --out ./case-42, or s3://BUCKET/PREFIX")
	case rc.SigningKeyFile == "":
		return rc, usageErr("missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)")
	}
	if c.MaxBytes, err = parseBytes(o.maxBytes); err != nil {
		return rc, usageErr("--max-bytes %q: %v", o.maxBytes, err)
	}
	c.AllowModes = splitList(o.allowModes)
	for _, m := range c.AllowModes {
		if m != acquire.ModeExec && m != acquire.ModeEphemeral && m != acquire.ModeNode {
			return rc, usageErr("--allow-modes %q: unknown mode %q (want exec, ephemeral, node)", o.allowModes, m)
		}
	}
	// Consent: --allow-modes given (flag or WARREN_ALLOW_MODES), or --mode naming the mode.
	if o.allowModesGiven {
		c.Consented, c.ConsentedBy = c.AllowModes, "--allow-modes "+o.allowModes
	}
	if c.Mode == acquire.ModeEphemeral || c.Mode == acquire.ModeNode {
		c.Consented, c.ConsentedBy = append(c.Consented, c.Mode), "--mode "+c.Mode
	}
	if o.nodeLayout != "" {
		l, ok := acquire.NodeLayouts[o.nodeLayout]
		if !ok {
			return rc, usageErr("--node-layout %q: want containerd, k3s, rke2 or bottlerocket", o.nodeLayout)
		}
		if c.NodeRuntimeDir == "" {
			c.NodeRuntimeDir = l.RuntimeDir
		}
		if c.NodeContainerdRoot == "" {
			c.NodeContainerdRoot = l.ContainerdRoot
		}
	}
	for _, r := range o.redact {
		re, err := regexp.Compile("(?i)" + r)
		if err != nil {
			return rc, usageErr("--redact-env %q: %v", r, err)
		}
		c.RedactEnv = append(c.RedactEnv, re)
	}
	cc.Pins = splitList(o.pins)
	cc.UserAgent = "warren-acquire/" + version
	if err := cc.Validate(); err != nil {
		return rc, usageErr("%v", err)
	}
	c.CollectorDir = o.collectorDir
	if c.CollectorDir == "" {
		if self, err := os.Executable(); err == nil {
			c.CollectorDir = filepath.Dir(self)
		}
	}
	c.Logger, c.Version = log, version
	rc.Output.Logger = log
	return rc, nil
}

// debugHandler logs every record at debug level.
type debugHandler struct{ slog.Handler }

func (h debugHandler) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.Handler.Enabled(ctx, slog.LevelDebug)
}

func (h debugHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.Enabled(ctx, r.Level) { // logr's error path does not ask
		return nil
	}
	r.Level = slog.LevelDebug
	return h.Handler.Handle(ctx, r)
}

func (h debugHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return debugHandler{h.Handler.WithAttrs(a)}
}
func (h debugHandler) WithGroup(n string) slog.Handler { return debugHandler{h.Handler.WithGroup(n)} }

// parseBytes reads a byte count: an integer, or a Kubernetes quantity (500Mi, 2Gi, 1G).
func parseBytes(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, errors.New("want a byte count such as 1073741824, 500Mi or 2Gi")
	}
	return q.Value(), nil
}

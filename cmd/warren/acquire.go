package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/client"
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

// runAcquire implements `warren acquire` and `warren acquire verify`.
func runAcquire(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return runAcquireVerify(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "volume" {
		return runAcquireVolume(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("warren acquire", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := acquire.DefaultConfig()
	var cc client.Config
	var c acquire.Config
	out := fs.String("out", "", "output directory (created if missing), or s3://BUCKET/PREFIX; a rerun into the same one keeps the targets that verify")
	var output acquire.Output
	addOutputFlags(fs, &output, true)
	fs.StringVar(&c.Namespace, "namespace", d.Namespace, "namespace of the target pods")
	fs.StringVar(&c.Namespace, "n", d.Namespace, "short for --namespace")
	fs.BoolVar(&c.AllNamespaces, "all-namespaces", false, "pick pods (-l or --all) in every namespace")
	fs.BoolVar(&c.AllNamespaces, "A", false, "short for --all-namespaces")
	fs.StringVar(&c.Selector, "selector", "", "acquire the pods matching this label selector")
	fs.StringVar(&c.Selector, "l", "", "short for --selector")
	fs.BoolVar(&c.All, "all", false, "acquire every pod of the namespace")
	fs.StringVar(&c.Container, "container", "", "acquire only this container of each pod (default: every container)")
	fs.StringVar(&c.Container, "c", "", "short for --container")
	fs.StringVar(&cc.Kubeconfig, "kubeconfig", "", "kubeconfig reaching the cluster through the gateway (warren kubeconfig writes one)")
	fs.StringVar(&cc.Context, "context", "", "context of --kubeconfig; default: its current context")
	addClientFlags(fs, &cc) // or these instead of --kubeconfig
	pins := fs.String("pin", "", "SPKI pins of the gateway's certificate or an intermediate, sha256:BASE64, comma-separated")
	signingKey := fs.String("signing-key", "", "the examiner's Ed25519 key (signing.key from warren keygen): signs every statement")
	fs.StringVar(&c.Case, "case", "", "case id, in every statement")
	fs.StringVar(&c.Examiner, "examiner", "", "examiner's name, in every statement")
	fs.StringVar(&c.Profile, "profile", d.Profile, "triage (volatile state, configuration, persistence, small files) or full (triage, then the whole root filesystem up to --max-bytes)")
	fs.StringVar(&c.Mode, "mode", d.Mode, "how to reach the containers: auto (exec, and where a container has no shell the next of --allow-modes), exec, "+
		"ephemeral (an ephemeral container running the collector image: it cannot be removed from the pod) or node (a collector pod on the node reading containerd's state)")
	allowModes := fs.String("allow-modes", strings.Join(d.AllowModes, ","), "modes auto may use, comma-separated, of exec, ephemeral, node; "+
		"giving it is consent to their lasting traces (without it, warren asks on a terminal before adding an ephemeral container, and never uses node)")
	fs.StringVar(&c.CollectorImage, "collector-image", d.CollectorImage, "warren's collector image, pinned by digest (NAME@sha256:...), for the ephemeral and node modes")
	fs.StringVar(&c.CollectorNamespace, "collector-namespace", d.CollectorNamespace, "namespace of the node mode's collector pods")
	nodeLayout := fs.String("node-layout", "", "where the nodes keep containerd's state: containerd (default), k3s, rke2 or bottlerocket")
	fs.StringVar(&c.NodeRuntimeDir, "node-runtime-dir", "", "containerd's runtime v2 task directory on the nodes (default: the layout's, "+d.NodeRuntimeDir+")")
	fs.StringVar(&c.NodeContainerdRoot, "node-containerd-root", "", "containerd's root on the nodes (default: the layout's, "+d.NodeContainerdRoot+")")
	fs.StringVar(&c.NodeContainerdNamespace, "node-containerd-namespace", d.NodeContainerdNamespace, "containerd namespace of Kubernetes' containers")
	fs.DurationVar(&c.StartTimeout, "start-timeout", d.StartTimeout, "bound on the wait for an ephemeral container or collector pod to start")
	fs.StringVar(&c.Method, "method", d.Method, "collection method: auto (the collector where it can run, else shell), collector or shell")
	maxBytes := fs.String("max-bytes", strconv.FormatInt(d.MaxBytes, 10), "bound on the file content stored per target: bytes, or a quantity such as 500Mi or 2Gi; 0 for the default, -1 for none")
	fs.DurationVar(&c.TimeBudget, "time-budget", d.TimeBudget, "bound on the collection inside each container; what is not reached is recorded as skipped")
	fs.IntVar(&c.Parallel, "parallel", d.Parallel, "targets acquired at once")
	var redact stringList
	fs.Var(&redact, "redact-env", "a regular expression of environment variable names whose values are redacted, besides the defaults; repeat for several")
	fs.BoolVar(&c.CopySecrets, "copy-secrets", false, "copy mounted Secret and service-account token files (by default they are listed, not copied)")
	collectorDir := fs.String("collector-dir", "", "directory of warren-collector-linux-amd64/-arm64 (make build); default: the directory of this warren binary")
	fs.StringVar(&c.ExecProtocol, "exec-protocol", d.ExecProtocol, "exec protocol: auto (WebSocket, SPDY when WebSocket is not understood), websocket or spdy")
	newLogger := logFlags(fs)
	fs.Usage = func() { fmt.Fprint(fs.Output(), acquireUsage+"\nflags of warren acquire:\n"); fs.PrintDefaults() }
	pods, err := parseInterleaved(fs, args, "n", "namespace", "A", "all-namespaces", "l", "selector", "c", "container")
	if err != nil {
		return err
	}
	c.Pods = pods
	log, err := newLogger()
	if err != nil {
		return err
	}
	// client-go reports, through klog, what an interrupted exec stream could not copy: expected, at debug level.
	klog.SetSlogLogger(slog.New(debugHandler{log.Handler()}))
	if *out == "" {
		return usageErr("missing --out: the output directory, e.g. --out ./case-42, or s3://BUCKET/PREFIX")
	}
	if *signingKey == "" {
		return usageErr("missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key)")
	}
	if c.MaxBytes, err = parseBytes(*maxBytes); err != nil {
		return usageErr("--max-bytes %q: %v", *maxBytes, err)
	}
	c.AllowModes = splitList(*allowModes)
	for _, m := range c.AllowModes {
		if m != acquire.ModeExec && m != acquire.ModeEphemeral && m != acquire.ModeNode {
			return usageErr("--allow-modes %q: unknown mode %q (want exec, ephemeral, node)", *allowModes, m)
		}
	}
	// Consent: --allow-modes given (flag or WARREN_ALLOW_MODES), or --mode naming the mode.
	if flagGiven(fs, "allow-modes") {
		c.Consented, c.ConsentedBy = c.AllowModes, "--allow-modes "+*allowModes
	}
	if c.Mode == acquire.ModeEphemeral || c.Mode == acquire.ModeNode {
		c.Consented, c.ConsentedBy = append(c.Consented, c.Mode), "--mode "+c.Mode
	}
	if *nodeLayout != "" {
		l, ok := acquire.NodeLayouts[*nodeLayout]
		if !ok {
			return usageErr("--node-layout %q: want containerd, k3s, rke2 or bottlerocket", *nodeLayout)
		}
		if c.NodeRuntimeDir == "" {
			c.NodeRuntimeDir = l.RuntimeDir
		}
		if c.NodeContainerdRoot == "" {
			c.NodeContainerdRoot = l.ContainerdRoot
		}
	}
	for _, r := range redact {
		re, err := regexp.Compile("(?i)" + r)
		if err != nil {
			return usageErr("--redact-env %q: %v", r, err)
		}
		c.RedactEnv = append(c.RedactEnv, re)
	}
	cc.Pins = splitList(*pins)
	cc.UserAgent = "warren-acquire/" + version
	if err := cc.Validate(); err != nil {
		return usageErr("%v", err)
	}
	c.CollectorDir = *collectorDir
	if c.CollectorDir == "" {
		if self, err := os.Executable(); err == nil {
			c.CollectorDir = filepath.Dir(self)
		}
	}
	signer, err := evidence.LoadSigner(*signingKey)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	output.Dest, output.Logger = *out, log
	store, unlock, err := output.OpenForAcquire(ctx, signer, stdout)
	if err != nil {
		return acquireErr(err)
	}
	defer unlock()
	restCfg, err := cc.RESTConfig(ctx)
	if err != nil {
		return err
	}
	c.REST, c.Cluster, c.Store, c.Signer, c.Logger, c.Version = restCfg, cc.Cluster, store, signer, log, version
	terminal := isTerminal(stdout)
	var in io.Reader
	if isTerminal(os.Stdin) && isTerminal(stderr) {
		in = os.Stdin
	}
	ui := newAcquireUI(stdout, stderr, in, terminal)
	c.Observer = ui
	if in != nil {
		c.Confirm = ui.Confirm // asks before a mode leaves a trace the examiner did not accept beforehand
	}
	sum, err := acquire.Run(ctx, c)
	ui.close()
	if err != nil {
		return acquireErr(err)
	}
	printSummary(stdout, sum, store, *out+output.VerifyArgs())
	if sum.Failed > 0 {
		return fmt.Errorf("%d of %d targets failed (the table above and %s say why); run the same command again to retry them",
			sum.Failed, len(sum.Index.Targets), store.Location(evidence.IndexName))
	}
	return nil
}

// runAcquireVerify implements `warren acquire verify DIR --key PUB`.
func runAcquireVerify(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("warren acquire verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "public key(s) of the examiner (signing.pub from warren keygen), comma-separated")
	var output acquire.Output
	addOutputFlags(fs, &output, false)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: warren acquire verify DIR|s3://BUCKET/PREFIX --key PUB [--s3-endpoint URL] [--s3-path-style] [--s3-region R]\n\nRe-hashes every archive and every file inside it against its statement, checks every statement's\nsignature, and lists every failure (file and reason). Exit 0 when everything verifies, 1 otherwise.\n\n")
		fs.PrintDefaults()
	}
	dirs, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(dirs) != 1:
		return usageErr("give one DIR (or s3://BUCKET/PREFIX) to verify, e.g. warren acquire verify ./case-42 --key keys/signing.pub")
	case *key == "":
		return usageErr("missing --key: the examiner's public key (signing.pub from warren keygen)")
	}
	keys, err := evidence.LoadKeys(splitList(*key)...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	output.Dest = dirs[0]
	store, err := output.OpenForVerify(ctx)
	if err != nil {
		return acquireErr(err)
	}
	rep, err := evidence.Verify(ctx, store, keys)
	if err != nil {
		return err
	}
	ok := 0
	for _, t := range rep.Targets {
		if t.OK() {
			ok++
			a := t.Statement.Predicate.Archive
			fmt.Fprintf(stdout, "OK    %s  %d files, %s, sha256 %s\n", t.Dir, a.Files, humanBytes(a.Size), a.SHA256)
		}
	}
	for _, f := range rep.Failures {
		fmt.Fprintf(stdout, "FAIL  %s\n", f)
	}
	if len(rep.Failures) > 0 {
		return fmt.Errorf("%d failure(s); %d of %d target(s) verify", len(rep.Failures), ok, len(rep.Targets))
	}
	fmt.Fprintf(stdout, "%d target(s) verify with key %s\n", ok, strings.Join(keys.IDs(), ", "))
	return nil
}

// parseInterleaved parses flags and positional arguments in any order (POD names before or after the flags, as
// kubectl takes them); "--" ends the flags. Unset flags are then read from WARREN_* variables. aliases are pairs of
// flags that set the same variable (-n and --namespace): when one is given, the other counts as given too, so that
// no WARREN_* variable overrides it.
func parseInterleaved(fs *flag.FlagSet, args []string, aliases ...string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for i := 0; i+1 < len(aliases); i += 2 {
		a, b := aliases[i], aliases[i+1]
		switch {
		case given[a] && !given[b]:
			fs.Set(b, fs.Lookup(a).Value.String())
		case given[b] && !given[a]:
			fs.Set(a, fs.Lookup(b).Value.String())
		}
	}
	if err := applyEnv(fs, envPrefix); err != nil {
		return nil, err
	}
	return positional, nil
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// flagGiven reports whether the flag was set, on the command line or from its WARREN_ variable.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

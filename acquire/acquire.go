package acquire

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
)

// Summary is what a run did: the index it wrote (DIR/acquisition.json) and how many targets failed.
type Summary struct {
	Index  *evidence.Index
	Failed int
}

// run is one Run.
type run struct {
	cfg      Config
	log      *slog.Logger
	rest     *rest.Config
	cs       kubernetes.Interface
	jsonCS   kubernetes.Interface // sends JSON bodies: a connector with a podSpec rule reads only those
	dyn      dynamic.Interface
	rec      *recording
	limiter  flowcontrol.RateLimiter
	shared   *shared
	keys     *evidence.Keys
	redactor *collector.Redactor

	consents consents
	seq      atomic.Int64 // numbers the run's ephemeral containers and collector pods

	mu    sync.Mutex // guards index
	index *evidence.Index
	// writing serializes the index's writes: each replaces acquisition.json through one partial object.
	writing sync.Mutex
}

// Run acquires the configured targets. It returns an error matching ErrUsage for a configuration that cannot run,
// ErrNotAllowed when the token may not exec into the targets (nothing is collected then), or another error when the
// targets could not be found or the index not written. Otherwise the Summary says which targets failed and why;
// a target already acquired into the store by an earlier run whose statement verifies is kept as it is.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys, err := evidence.NewKeys(cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	var idBytes [6]byte
	rand.Read(idBytes[:])
	id := hex.EncodeToString(idBytes[:])
	r := &run{cfg: cfg, log: cfg.Logger.With("acquisition", id), keys: keys, redactor: collector.NewRedactor(cfg.RedactEnv), shared: &shared{}}
	r.rec = &recording{ids: &auditIDs{prefix: AuditIDPrefix(id)}, run: &requestLog{}, now: cfg.Now}
	r.rest = rest.CopyConfig(cfg.REST)
	// One pace for every request of the run, plain ones and exec upgrades alike (client-go's executors do not
	// consult the config's limiter): the gateway counts them all against the token.
	r.limiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	r.rest.RateLimiter = r.limiter
	r.rest.Timeout = 0 // exec streams and logs are long; plain requests get RequestTimeout through their context
	// Innermost: the recorder sees each request as it leaves, with its credentials.
	r.rest.WrapTransport = transport.Wrappers(r.rec.wrap, cfg.REST.WrapTransport)
	if r.cs, err = kubernetes.NewForConfig(r.rest); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if r.dyn, err = dynamic.NewForConfig(r.rest); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	jsonCfg := rest.CopyConfig(r.rest)
	jsonCfg.ContentType = "application/json"
	if r.jsonCS, err = kubernetes.NewForConfig(jsonCfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	started := cfg.Now().UTC()
	r.index = &evidence.Index{AcquisitionID: id, Case: cfg.Case, Examiner: cfg.Examiner, Cluster: cfg.Cluster, Profile: cfg.Profile,
		StartedOn: started, Acquirer: evidence.Acquirer{Name: "warren", Version: cfg.Version}}

	targets, err := findTargets(ctx, r.cs, cfg)
	if err != nil {
		return nil, err
	}
	infos := make([]TargetInfo, len(targets))
	for i, t := range targets {
		infos[i] = TargetInfo{t.namespace, t.pod, t.container}
		r.index.Targets = append(r.index.Targets, evidence.IndexTarget{Namespace: t.namespace, Pod: t.pod, Container: t.container,
			Dir: t.dir, Result: evidence.ResultPending})
	}
	if err := r.preflightModes(ctx, targets); err != nil {
		return nil, err
	}
	caller, token, _ := r.rec.caller()
	r.index.Caller = caller
	// A token source that can hand out a fresh token (a command, an exec plugin, a file) outlives one token.
	refreshing := cfg.REST.ExecProvider != nil || cfg.REST.WrapTransport != nil || cfg.REST.BearerTokenFile != ""
	if w := expiryWarning(token.Expiry, cfg.Now(), runnable(targets), cfg.Parallel, cfg.TimeBudget, refreshing); w != "" {
		cfg.Observer.Warn(w)
	}
	cfg.Observer.Planned(infos)
	if err := r.writeIndex(ctx); err != nil {
		return nil, err
	}

	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			res := r.acquire(ctx, t)
			r.finish(ctx, i, infos[i], res)
		})
	}
	wg.Wait()

	r.mu.Lock()
	r.index.FinishedOn = cfg.Now().UTC()
	r.index.Requests = r.rec.run.list()
	failed := 0
	for i := range r.index.Targets {
		if tg := &r.index.Targets[i]; tg.Result == evidence.ResultPending {
			tg.Result, tg.Reason = evidence.ResultFailed, "not started: the acquisition was stopped ("+context.Cause(ctx).Error()+")"
		}
		if r.index.Targets[i].Result == evidence.ResultFailed {
			failed++
		}
	}
	r.mu.Unlock()
	// The index is written even when ctx is done (an interrupted run): it says which targets are whole.
	if err := r.writeIndex(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	return &Summary{Index: r.index, Failed: failed}, nil
}

func runnable(ts []*target) int {
	n := 0
	for _, t := range ts {
		if t.problem == "" {
			n++
		}
	}
	return n
}

func (r *run) finish(ctx context.Context, i int, info TargetInfo, res evidence.IndexTarget) {
	r.mu.Lock()
	r.index.Targets[i] = res
	r.mu.Unlock()
	r.cfg.Observer.Finished(info, res)
	if err := r.writeIndex(context.WithoutCancel(ctx)); err != nil {
		r.log.Warn("cannot update the index", "err", err)
	}
}

func (r *run) writeIndex(ctx context.Context) error {
	r.writing.Lock()
	defer r.writing.Unlock()
	r.mu.Lock()
	idx := *r.index
	idx.Targets = append([]evidence.IndexTarget(nil), r.index.Targets...)
	r.mu.Unlock()
	if err := evidence.WriteIndex(ctx, r.cfg.Store, &idx); err != nil {
		return fmt.Errorf("cannot write %s: %w", r.cfg.Store.Location(evidence.IndexName), err)
	}
	return nil
}

// acquire acquires one target and returns its outcome.
func (r *run) acquire(ctx context.Context, t *target) evidence.IndexTarget {
	res := evidence.IndexTarget{Namespace: t.namespace, Pod: t.pod, Container: t.container, Dir: t.dir, Mode: ModeExec,
		StartedOn: r.cfg.Now().UTC()}
	fail := func(format string, args ...any) evidence.IndexTarget {
		res.Result, res.Reason, res.FinishedOn = evidence.ResultFailed, fmt.Sprintf(format, args...), r.cfg.Now().UTC()
		r.log.Info("target failed", "target", t.name(), "reason", res.Reason)
		return res
	}
	if t.problem != "" {
		return fail("%s", t.problem)
	}
	if rep := evidence.VerifyTarget(ctx, r.cfg.Store, t.dir, r.keys); rep.OK() {
		p := rep.Statement.Predicate
		res.Result, res.Reason = evidence.ResultKept, "acquired by acquisition "+p.AcquisitionID+" at "+p.FinishedOn.Format(time.RFC3339)+"; its statement verifies"
		res.Mode, res.Method, res.Files, res.Bytes, res.SHA256, res.Skipped = p.Mode, p.Method, p.Archive.Files, p.Archive.Size, p.Archive.SHA256, len(p.Skipped)
		res.StartedOn, res.FinishedOn = p.StartedOn, p.FinishedOn
		return res
	}
	log := &requestLog{}
	ctx = withLog(ctx, log)
	tw, err := evidence.BeginTarget(ctx, r.cfg.Store, t.dir)
	if err != nil {
		return fail("%v", err)
	}
	prog := &Progress{started: time.Now(), Budget: r.cfg.TimeBudget, MaxBytes: r.cfg.MaxBytes}
	r.cfg.Observer.Started(TargetInfo{t.namespace, t.pod, t.container}, prog)
	finished := false
	defer func() {
		if !finished {
			tw.Abandon() // stays evidence.tar.partial
		}
	}()
	sink := &archiveSink{a: tw.Archive(), progress: prog}
	kube := &kubeEvidence{cs: r.cs, dyn: r.dyn, redactor: r.redactor, maxLog: r.cfg.MaxLogBytes, timeout: r.cfg.RequestTimeout,
		logTimeout: r.cfg.TimeBudget, now: r.cfg.Now, shared: r.shared}

	node := kube.node(ctx, t.obj.Spec.NodeName)
	arch := runtime.GOARCH
	if node != nil && node.Status.NodeInfo.Architecture != "" {
		arch = node.Status.NodeInfo.Architecture
	} else if a := t.obj.Spec.NodeSelector["kubernetes.io/arch"]; a != "" {
		arch = a
	}
	ex := &execer{rest: r.rest, cs: r.cs, limiter: r.limiter, namespace: t.namespace, pod: t.pod, container: t.container, protocol: r.cfg.ExecProtocol,
		retryFor: r.cfg.RetryFor, log: log, now: r.cfg.Now}
	opts := collector.Options{Profile: r.cfg.Profile, Method: r.cfg.Method, MaxBytes: r.cfg.MaxBytes, TimeBudget: r.cfg.TimeBudget,
		RedactEnv: r.cfg.RedactEnv, CopySecrets: r.cfg.CopySecrets, Arch: arch, BinaryDir: r.cfg.CollectorDir,
		Log: r.log.With("target", t.name())}
	var tried attempts
	var mr *modeResult // the mode that collected
	for _, mode := range r.cfg.chain() {
		if ctx.Err() != nil {
			break
		}
		cur := &modeResult{}
		ok, how := r.consent(ctx, mode)
		if !ok {
			tried.add(mode, evidence.OutcomeNotConsented, notConsentedReason(mode))
			continue
		}
		cur.consent = how
		// The preflight answered for exec alone, or for the one mode asked for; in auto each mode is asked (once per run).
		if r.cfg.Mode == ModeAuto && len(r.cfg.chain()) > 1 {
			if ok, why := r.permitted(ctx, mode, t); !ok {
				tried.add(mode, evidence.OutcomeNotPermitted, why)
				continue
			}
		}
		switch mode {
		case ModeExec:
			cur.cres, err = collector.Collect(ctx, ex.exec, opts, sink)
		case ModeEphemeral:
			err = r.ephemeral(ctx, t, ex, opts, node, sink, cur)
		case ModeNode:
			err = r.nodeMode(ctx, t, ex, opts, node, sink, cur)
		}
		if err == nil {
			cur.mode, mr = mode, cur
			tried.add(mode, evidence.OutcomeUsed, cur.why)
			break
		}
		reason := describeModeError(mode, err, t)
		// Another mode may follow only where this one wrote nothing: the archive holds one collection.
		untouched := tw.Archive().Written() == 0
		switch {
		case cur.unavailable && untouched:
			tried.add(mode, evidence.OutcomeUnavailable, reason)
			continue
		case mode == ModeExec && errors.Is(err, collector.ErrNoShell) && untouched:
			tried.add(mode, evidence.OutcomeFailed, reason)
			continue
		}
		tried.add(mode, evidence.OutcomeFailed, reason)
		break
	}
	if mr == nil && err == nil {
		if ctx.Err() != nil {
			return fail("interrupted (%v) before a collection started", context.Cause(ctx))
		}
		return fail("%s", noModeReason(r.cfg, tried))
	}
	if mr == nil {
		if ctx.Err() != nil {
			return fail("interrupted (%v): the partial archive is %s", context.Cause(ctx), r.cfg.Store.Location(t.dir+"/"+evidence.ArchiveName+evidence.PartialSuffix))
		}
		if len(tried) > 1 {
			return fail("%s", tried.summary())
		}
		return fail("%s", describeModeError(tried[len(tried)-1].Mode, err, t))
	}
	cres := mr.cres
	// Every entry the collector's manifest vouched for is what the archive holds, byte for byte.
	stored := map[string]evidence.File{}
	for _, f := range tw.Archive().Files() {
		stored[f.Path] = f
	}
	for _, f := range cres.Files {
		if s, ok := stored[f.Path]; !ok || s.SHA256 != f.SHA256 || s.Size != f.Size {
			return fail("integrity: %s: the archive holds sha256 %s (%d bytes), the collection received %s (%d bytes)", f.Path, s.SHA256, s.Size, f.SHA256, f.Size)
		}
	}
	if err := kube.collect(ctx, sink, t.obj, t.container, node); err != nil {
		if ctx.Err() != nil {
			return fail("interrupted (%v) while collecting the Kubernetes-side evidence", context.Cause(ctx))
		}
		return fail("Kubernetes-side evidence: %v", err)
	}
	pred := r.predicate(t, cres, kube, ex, log)
	pred.Mode, pred.ModeAttempts, pred.Ephemeral, pred.NodePod = mr.mode, tried, mr.ephemeral, mr.nodePod
	pred.Footprint = append(pred.Footprint, mr.footprint...)
	pred.StartedOn, pred.FinishedOn = res.StartedOn, r.cfg.Now().UTC()
	st, err := tw.Finish(ctx, r.cfg.Signer, pred)
	if err != nil {
		return fail("%v", err)
	}
	finished = true
	res.Result, res.Mode, res.Method, res.FinishedOn = evidence.ResultAcquired, mr.mode, cres.Mode, pred.FinishedOn
	res.Files, res.Bytes, res.SHA256, res.Skipped = st.Predicate.Archive.Files, st.Predicate.Archive.Size, st.Predicate.Archive.SHA256, len(pred.Skipped)
	if cres.ModeReason != "" {
		res.Reason = "shell: " + cres.ModeReason
	}
	if mr.mode != ModeExec && len(tried) > 1 {
		res.Reason = tried.summary()
	}
	return res
}

// noModeReason is why no mode could be used for a target.
func noModeReason(c Config, tried attempts) string {
	if len(tried) == 0 {
		return "no mode to use: --allow-modes " + strings.Join(c.AllowModes, ",")
	}
	return "no mode could collect it: " + tried.summary()
}

func (r *run) predicate(t *target, cres *collector.Result, kube *kubeEvidence, ex *execer, log *requestLog) evidence.Predicate {
	caller, _, _ := r.rec.caller()
	status, _ := containerStatusOf(t.obj, t.container)
	p := evidence.Predicate{
		Case: r.cfg.Case, Examiner: r.cfg.Examiner, AcquisitionID: r.index.AcquisitionID,
		Target: evidence.Target{Cluster: r.cfg.Cluster, Namespace: t.namespace, Pod: t.pod, PodUID: string(t.obj.UID), Container: t.container,
			ContainerID: status.ContainerID, Image: imageOf(t.obj, t.container), ImageID: status.ImageID, Node: t.obj.Spec.NodeName},
		Caller:    caller,
		Collector: evidence.Collector{Version: cres.CollectorVersion, Digest: cres.CollectorDigest},
		Profile:   r.cfg.Profile, Mode: ModeExec, Method: cres.Mode, MethodReason: cres.ModeReason,
		Limits:    evidence.Limits{MaxBytes: r.cfg.MaxBytes, TimeBudget: r.cfg.TimeBudget.String()},
		Footprint: cres.Footprint,
		Acquirer:  evidence.Acquirer{Name: "warren", Version: r.cfg.Version},
	}
	// The pod object came from the run's own request that found the targets.
	p.Requests = append(p.Requests, findPodRequest(r.rec.run.list(), t)...)
	p.Requests = append(p.Requests, log.list()...)
	for _, f := range cres.Files {
		if f.Note != "" || f.OrigSize != 0 || f.OrigSHA256 != "" {
			p.Files = append(p.Files, evidence.FileNote{Path: f.Path, Size: f.Size, Redacted: hasPrefix(f.Note, "redacted"),
				Truncated:    hasPrefix(f.Note, "size-cap") || hasPrefix(f.Note, "max-bytes") || hasPrefix(f.Note, "time-budget"),
				OriginalSize: f.OrigSize, OriginalSHA256: f.OrigSHA256})
		}
	}
	p.Files = append(p.Files, kube.notes...)
	for _, s := range cres.Skipped {
		p.Skipped = append(p.Skipped, evidence.Skip{Path: s.Path, Reason: s.Reason, Detail: s.Detail})
	}
	p.Skipped = append(p.Skipped, kube.skipped...)
	// One collector.ExecRecord per call of the execer, in order: the collector's digests (it hashed what it sent and
	// received) with the request that carried each.
	p.Execs = ex.records()
	p.Witness = evidence.Witness{StdoutBytes: cres.Stdout.Bytes, StdoutSHA256: cres.Stdout.SHA256}
	// The collection's execs are the last ones (an exec that found no shell may come first, in auto mode).
	off := len(p.Execs) - len(cres.Execs)
	for i := range cres.Execs {
		if off < 0 {
			break
		}
		c := cres.Execs[i]
		e := &p.Execs[off+i]
		e.Argv = c.Argv // the collector names its scripts
		e.StdinBytes, e.StdinSHA256, e.StdoutBytes, e.StdoutSHA256 = c.Stdin.Bytes, c.Stdin.SHA256, c.Stdout.Bytes, c.Stdout.SHA256
		if e.StdoutSHA256 == cres.Stdout.SHA256 && e.StdoutBytes == cres.Stdout.Bytes && p.Witness.AuditID == "" {
			p.Witness.AuditID = e.AuditID
		}
	}
	return p
}

// findPodRequest is the run's request that read the target's pod: its GET, or the list it was in.
func findPodRequest(reqs []evidence.Request, t *target) []evidence.Request {
	get := "/api/v1/namespaces/" + t.namespace + "/pods/" + t.pod
	for _, q := range reqs {
		if q.Method == http.MethodGet && q.Path == get {
			return []evidence.Request{q}
		}
	}
	for _, q := range reqs {
		if q.Method == http.MethodGet && (q.Path == "/api/v1/namespaces/"+t.namespace+"/pods" || q.Path == "/api/v1/pods") {
			return []evidence.Request{q}
		}
	}
	return nil
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// archiveSink is the collector's and the Kubernetes side's Sink: entries go into the archive, counted for the
// progress display.
type archiveSink struct {
	a        *evidence.Archive
	progress *Progress
}

func (s *archiveSink) WriteEntry(hdr *tar.Header, body io.Reader) error {
	if body == nil {
		body = eofReader{}
	}
	_, err := s.a.WriteEntry(hdr, &progressReader{r: body, s: s})
	s.progress.bytes.Store(s.a.Written())
	return err
}

type progressReader struct {
	r io.Reader
	s *archiveSink
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.s.progress.bytes.Store(p.s.a.Written() + int64(n))
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/warren-dev/warren/acquire"
	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/gateway/limit"
	"github.com/warren-dev/warren/internal/testenv/wait"
)

// warrenAcquire runs the warren binary and returns its stdout, stderr and exit code.
func warrenAcquire(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, warrenBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("warren %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// acquireArgs are the flags that reach e's cluster through its gateway with token, into out.
func (e *streamEnv) acquireArgs(token, out string) []string {
	return []string{"acquire", "--out", out, "-n", streamNS, "--gateway", e.gs.url(), "--cluster", streamCluster,
		"--token", token, "--ca-file", e.gs.caFile, "--signing-key", acqShared.keyFile, "--collector-dir", acqShared.collectorDir,
		"--case", "ir-7", "--examiner", "cli"}
}

func presetToken(t testing.TB) string {
	t.Helper()
	rules, err := acquire.Preset([]string{streamNS})
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, r := range rules {
		rs = append(rs, r.Rule)
	}
	return callerToken(t, []string{streamCluster}, rs...)
}

// TestAcquireCLI: warren acquire and warren acquire verify as a person runs them: exit codes (0, 1 with a failed
// target, 2 for usage), plain log lines and the summary table when stdout is not a terminal, and verify naming
// every file that broke (a flipped byte, a removed statement) and a wrong key.
func TestAcquireCLI(t *testing.T) {
	e := newStreamEnv(t)
	needAcquire(t)
	a := imagePod(t, "cli-a", "busybox", "echo one > /tmp/one; exec sleep 3600", nil)
	b := imagePod(t, "cli-b", "busybox", "echo two > /tmp/two; exec sleep 3600", nil)
	out := filepath.Join(t.TempDir(), "case")
	args := e.acquireArgs(presetToken(t), out)

	stdout, stderr, code := warrenAcquire(t, append(args, a.Name, b.Name)...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  2 target\(s\)$`),
		regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  \[\d/2\] acquired  default/` + a.Name + `/main  collector, \d+ files, [\d.]+ [KM]iB, sha256 [0-9a-f]{12}…$`),
		regexp.MustCompile(`(?m)^TARGET\s+MODE\s+FILES\s+BYTES\s+SHA-256\s+DURATION\s+RESULT$`),
		regexp.MustCompile(`(?m)^default/` + b.Name + `/main\s+exec/collector\s+\d+\s+[\d.]+ [KM]iB\s+[0-9a-f]{12}…\s+[\d.]+m?s\s+acquired$`),
		regexp.MustCompile(`(?m)^2 acquired, 0 kept from an earlier run, 0 failed; index .*/case/acquisition.json$`),
	} {
		if !want.MatchString(stdout) {
			t.Errorf("stdout lacks %s:\n%s", want, stdout)
		}
	}

	vout, verr, code := warrenAcquire(t, "acquire", "verify", out, "--key", acqShared.pubFile)
	if code != 0 || !strings.Contains(vout, "2 target(s) verify with key ") {
		t.Fatalf("verify: exit %d\n%s%s", code, vout, verr)
	}

	// Rerun into the same place: both kept, nothing collected again.
	stdout, stderr, code = warrenAcquire(t, append(args, a.Name, b.Name)...)
	if code != 0 || !strings.Contains(stdout, "0 acquired, 2 kept from an earlier run, 0 failed") {
		t.Fatalf("rerun: exit %d\n%s%s", code, stdout, stderr)
	}

	// Break things: a flipped byte in a's archive, b's statement removed.
	aDir, bDir := streamNS+"/"+a.Name+"/main", streamNS+"/"+b.Name+"/main"
	arch := filepath.Join(out, aDir, evidence.ArchiveName)
	raw, _ := os.ReadFile(arch)
	i := bytes.Index(raw, []byte("one\n"))
	if i < 0 {
		t.Fatal("the planted file is not in the archive")
	}
	raw[i] ^= 1
	os.WriteFile(arch, raw, 0o600)
	os.Remove(filepath.Join(out, bDir, evidence.StatementName))
	vout, _, code = warrenAcquire(t, "acquire", "verify", out, "--key", acqShared.pubFile)
	for _, want := range []string{
		"FAIL  " + aDir + "/evidence.tar: sha256 ",
		"FAIL  " + aDir + "/evidence.tar:container/fs/tmp/one: sha256 ",
		"FAIL  " + bDir + "/statement.dsse.json: missing",
	} {
		if !strings.Contains(vout, want) {
			t.Errorf("verify output lacks %q:\n%s", want, vout)
		}
	}
	if code != 1 {
		t.Fatalf("verify of a broken directory: exit %d", code)
	}
	// A wrong key.
	otherDir := t.TempDir()
	if _, _, code := warrenAcquire(t, "keygen", "--out", otherDir); code != 0 {
		t.Fatal("keygen")
	}
	vout, _, code = warrenAcquire(t, "acquire", "verify", out, "--key", filepath.Join(otherDir, "signing.pub"))
	if code != 1 || !strings.Contains(vout, "FAIL  "+aDir+"/statement.dsse.json: signed by key [") {
		t.Fatalf("wrong key: exit %d\n%s", code, vout)
	}

	// A failed target: exit 1, and the table says why.
	stdout, stderr, code = warrenAcquire(t, append(e.acquireArgs(presetToken(t), filepath.Join(t.TempDir(), "c2")), a.Name, "no-such-pod")...)
	if code != 1 || !strings.Contains(stderr, "warren acquire: 1 of 2 targets failed") ||
		!regexp.MustCompile(`(?m)^default/no-such-pod/\s+-\s+-\s+-\s+-\s+-\s+failed: pod default/no-such-pod not found$`).MatchString(stdout) {
		t.Fatalf("a failed target: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Usage errors: exit 2, one line.
	for _, c := range []struct {
		args []string
		want string
	}{
		{e.acquireArgs("t", out), "warren acquire: no targets: name pods (POD or POD/CONTAINER), or give -l SELECTOR or --all; run `warren acquire --help` for the flags\n"},
		{append(e.acquireArgs("t", out), "--all", "x"), "warren acquire: give pod names, -l SELECTOR or --all, not several; run `warren acquire --help` for the flags\n"},
		{append(e.acquireArgs("t", out), "--profile", "deep", "x"), "warren acquire: --profile \"deep\": want triage or full; run `warren acquire --help` for the flags\n"},
		{[]string{"acquire", "x", "--out", out}, "warren acquire: missing --signing-key: the examiner's key (warren keygen --out DIR writes DIR/signing.key); run `warren acquire --help` for the flags\n"},
	} {
		_, stderr, code := warrenAcquire(t, c.args...)
		if code != 2 || stderr != c.want {
			t.Errorf("%v: exit %d %q\nwant %q", c.args[len(c.args)-2:], code, stderr, c.want)
		}
	}
}

// TestAcquireKilledAndResumed: warren acquire killed (SIGKILL) while an archive streams leaves that target as
// evidence.tar.partial (which verify names as unfinished) and the finished one whole; the same command again keeps
// the finished target and redoes the other. Interrupted with SIGINT, a run records the target as interrupted and
// exits 1.
func TestAcquireKilledAndResumed(t *testing.T) {
	e := newStreamEnv(t)
	needAcquire(t)
	small := imagePod(t, "resume-a", "busybox", "exec sleep 3600", nil)
	big := imagePod(t, "resume-b", "debian", "exec sleep 3600", nil) // ~130 MB: a full profile streams for a while
	out := filepath.Join(t.TempDir(), "case")
	args := append(e.acquireArgs(presetToken(t), out), "--profile", "full", "--parallel", "1", small.Name, big.Name)
	bigDir := filepath.Join(out, streamNS, big.Name, "main")
	smallDir := filepath.Join(out, streamNS, small.Name, "main")

	kill := func(sig syscall.Signal) *process {
		p := startProcess(t, "warren acquire", args...)
		// Its own archive, not the one a previous run left: it has started.
		wait.Until(t, 2*time.Minute, "the big target started", func() bool {
			return strings.Contains(p.log.String(), "/"+big.Name+"/main  started")
		})
		wait.Until(t, 2*time.Minute, "the big target streaming", func() bool {
			fi, err := os.Stat(filepath.Join(bigDir, evidence.ArchiveName+evidence.PartialSuffix))
			return err == nil && fi.Size() > 4<<20
		})
		p.signal(sig)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Fatal("warren acquire did not end")
		}
		return p
	}
	p := kill(syscall.SIGKILL)
	if _, err := os.Stat(filepath.Join(bigDir, evidence.ArchiveName)); !os.IsNotExist(err) {
		t.Fatalf("a killed target has an evidence.tar: %v", err)
	}
	if _, err := os.Stat(filepath.Join(smallDir, evidence.StatementName)); err != nil {
		t.Fatalf("the finished target: %v\n%s", err, p.log.String())
	}
	vout, _, code := warrenAcquire(t, "acquire", "verify", out, "--key", acqShared.pubFile)
	if code != 1 || !strings.Contains(vout, "FAIL  "+streamNS+"/"+big.Name+"/main/evidence.tar.partial: the acquisition of this target did not finish") ||
		!strings.Contains(vout, "OK    "+streamNS+"/"+small.Name+"/main") {
		t.Fatalf("verify after the kill: exit %d\n%s", code, vout)
	}

	// SIGINT: the run ends the target, says so and exits 1.
	p = kill(syscall.SIGINT)
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(p.log.String(), "FAILED    "+streamNS+"/"+big.Name+"/main: interrupted (interrupt signal received): the partial archive is ") ||
		strings.Contains(p.log.String(), "Copying stdout failed") {
		t.Fatalf("SIGINT: %v (exit error %v, code %d)\n%s", p.err, errors.As(p.err, &ee), ee.ExitCode(), p.log.String())
	}
	idx, err := evidence.ReadIndex(context.Background(), mustStore(t, out))
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range idx.Targets {
		if tg.Pod == big.Name && (tg.Result != evidence.ResultFailed || !strings.HasPrefix(tg.Reason, "interrupted")) {
			t.Fatalf("the interrupted target in the index: %+v", tg)
		}
	}

	stdout, stderr, code := warrenAcquire(t, args...)
	if code != 0 || !strings.Contains(stdout, "1 acquired, 1 kept from an earlier run, 0 failed") {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
	}
	vout, _, code = warrenAcquire(t, "acquire", "verify", out, "--key", acqShared.pubFile)
	if code != 0 || !strings.Contains(vout, "2 target(s) verify") {
		t.Fatalf("verify after the resume: exit %d\n%s", code, vout)
	}
	if _, err := os.Stat(filepath.Join(bigDir, evidence.ArchiveName+evidence.PartialSuffix)); !os.IsNotExist(err) {
		t.Fatalf("the resumed target left its partial archive: %v", err)
	}
}

func mustStore(t *testing.T, dir string) *evidence.LocalStore {
	s, err := evidence.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAcquireMaxBytes: with --max-bytes below what a full profile finds, the file that crosses the bound is stored
// truncated and noted, and the rest are recorded as skipped (max-bytes); the statement still verifies.
func TestAcquireMaxBytes(t *testing.T) {
	e := newStreamEnv(t)
	pod := imagePod(t, "acq-max", "debian", "exec sleep 3600", nil)
	a := e.newAcquisition(t, pod.Name)
	a.cfg.REST = e.presetConfig(t)
	a.cfg.Profile, a.cfg.MaxBytes = "full", 1<<20
	if sum := a.run(t); sum.Failed != 0 {
		t.Fatalf("summary: %s", prettyJSON(sum.Index))
	}
	st := a.statement(t, streamNS+"/"+pod.Name+"/main")
	skips := skipsOf(st, "max-bytes")
	if len(skips) == 0 || skips[len(skips)-1].Path != "full" {
		t.Fatalf("max-bytes skips: %s", prettyJSON(skips))
	}
	truncated := 0
	for _, f := range st.Predicate.Files {
		if f.Truncated {
			truncated++
		}
	}
	if truncated == 0 || st.Predicate.Limits.MaxBytes != 1<<20 {
		t.Fatalf("no truncated file noted (limits %+v): %s", st.Predicate.Limits, prettyJSON(st.Predicate.Files))
	}
}

// TestAcquireManyPodsOneToken: 50 pods acquired at once (--parallel 50) with one token, through a gateway with its
// default limits: every target succeeds (429s, if any, are waited out as the gateway says).
func TestAcquireManyPodsOneToken(t *testing.T) {
	e := newStreamEnvWith(t, gatewayOpts{limits: defaultLimits()})
	const n = 50
	label := uniqueName("many")
	for i := range n {
		labelPod(t, imagePod(t, fmt.Sprintf("many-%d", i), "busybox", "exec sleep 3600", nil), "batch", label)
	}
	a := e.newAcquisition(t)
	a.cfg.REST = e.presetConfig(t)
	a.cfg.Selector, a.cfg.Parallel = "batch="+label, n
	start := time.Now()
	sum := a.run(t)
	if sum.Failed != 0 || len(sum.Index.Targets) != n {
		t.Fatalf("%d of %d failed: %s", sum.Failed, len(sum.Index.Targets), prettyJSON(sum.Index))
	}
	refused := 0
	for _, r := range e.gwAudit.records() {
		if r.Status == 429 {
			refused++
		}
	}
	t.Logf("%d pods in %v with --parallel %d; the gateway answered 429 %d times", n, time.Since(start).Round(time.Millisecond), n, refused)
	rep, err := evidence.Verify(context.Background(), a.store, acqShared.keys)
	if err != nil || len(rep.Failures) != 0 || len(rep.Targets) != n {
		t.Fatalf("verify: %v %v", err, rep.Failures)
	}
}

// defaultLimits are the gateway's limits as `warren gateway` runs with no limit flags.
func defaultLimits() *limit.Limiter { return limit.New(limit.DefaultConfig()) }

// TestAcquireOnATerminal: on a terminal, warren acquire draws one progress line per target in flight (bytes, rate,
// elapsed, the time left at most) and ends with the summary table.
func TestAcquireOnATerminal(t *testing.T) {
	e := newStreamEnv(t)
	needAcquire(t)
	pod := imagePod(t, "tty", "debian", "exec sleep 3600", nil)
	args := append(e.acquireArgs(presetToken(t), filepath.Join(t.TempDir(), "case")), "--profile", "full", pod.Name)
	cmd := exec.Command(warrenBinary(t), args...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(&out, ptmx) // ends with EIO once the process has exited
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("warren acquire on a terminal: %v", err)
	}
	<-copied
	screen := regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]").ReplaceAllString(out.String(), "")
	bar := regexp.MustCompile(`default/` + pod.Name + `/main\s+\S+\s+[\d.]+ [KMG]?i?B [\d.]+ [KMG]?i?B/s \d+s eta ≤ \d+m\d+s`)
	if !bar.MatchString(screen) || !strings.Contains(screen, "TARGET") || strings.Contains(screen, "started") {
		t.Fatalf("no progress line (or plain log lines) on the terminal:\n%q", screen)
	}
}

// TestAcquireWarnsOfTokenExpiry: a token that expires before the acquisition could end is said so before it starts.
func TestAcquireWarnsOfTokenExpiry(t *testing.T) {
	e := newStreamEnv(t)
	needAcquire(t)
	pod := imagePod(t, "expiry", "busybox", "", nil)
	rules, _ := acquire.Preset([]string{streamNS})
	var parsed []auth.Rule
	for _, r := range rules {
		pr, _ := auth.ParseRule(r.Rule)
		parsed = append(parsed, pr)
	}
	short, err := keys.IssueCaller(auth.IssueOptions{Subject: "e2e-caller", Clusters: []string{streamCluster}, Rules: parsed, TTL: 3 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := warrenAcquire(t, append(e.acquireArgs(short, filepath.Join(t.TempDir(), "case")), "--time-budget", "10m", pod.Name)...)
	if code != 0 || !regexp.MustCompile(`warren acquire: warning: the token expires at \S+ \(in [0-3]m\d+s\), before the acquisition's estimated end`).MatchString(stderr) {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
}

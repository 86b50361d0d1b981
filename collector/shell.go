package collector

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// shellRun is a shell-only collection: every file read by one exec of cat (a path as its argv, no shell), the
// listings by constant scripts, every byte hashed here as it arrives. Slower than the collector (an exec per
// file) and blind where a tool is missing (no readlink: no links; no stat: no bodyfile metadata, no recent
// files), each recorded as a skip with reason no-tool. Owned by Collect's goroutine.
type shellRun struct {
	d        *driver
	p        *probeInfo
	redactor *Redactor
	deadline time.Time
	stored   int64
	files    []File
	skips    []Skip
	copied   map[string]bool
	names    map[string]bool
	timeUp   bool

	bootTime, oldestStart time.Time // for "changed since the container started"
}

// inlineSpool is how much of a file shell mode keeps in memory before spooling it to a temporary file.
const inlineSpool = 16 << 20

func (d *driver) shell(ctx context.Context, p *probeInfo) error {
	d.res.Mode = "shell"
	if !p.tools["cat"] {
		return fmt.Errorf("collector: the container has neither a place to run the collector (%s) nor cat for a shell-only collection", d.res.ModeReason)
	}
	s := &shellRun{d: d, p: p, redactor: NewRedactor(d.opts.RedactEnv), copied: map[string]bool{}, names: map[string]bool{},
		deadline: time.Now().Add(d.opts.TimeBudget)}
	self := SelfInfo{Mode: "shell", Reason: d.res.ModeReason, Started: d.res.Started, UID: -1, GID: -1}
	if err := s.metaJSON(SelfPath, self); err != nil {
		return err
	}
	for i := range p.mounts {
		m := &p.mounts[i]
		m.Secret = secretReason(*m, func(dir string) bool { return s.hasData(ctx, dir) })
	}
	steps := []func(context.Context) error{s.processes, s.config, s.listing}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	if s.skips == nil {
		s.skips = []Skip{}
	}
	d.res.Skipped = append(d.res.Skipped, s.skips...)
	if err := s.metaJSON(SkippedPath, d.res.Skipped); err != nil {
		return err
	}
	m := Manifest{Files: append([]File(nil), s.files...), Ended: time.Now().UTC()}
	return s.metaJSON(ManifestPath, m)
}

func (s *shellRun) outOfTime() bool {
	if !s.timeUp && !time.Now().Before(s.deadline) {
		s.timeUp = true
	}
	return s.timeUp
}

func (s *shellRun) skip(p, reason, detail string) {
	s.skips = append(s.skips, Skip{Path: EscapeName(p), Reason: reason, Detail: EscapeName(detail)})
}

// put hands an entry to the sink, hashing it, and records it.
func (s *shellRun) put(name string, size int64, body io.Reader, f File) error {
	if s.names[name] {
		return nil
	}
	s.names[name] = true
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(body, h)}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: time.Now().Truncate(time.Second), Format: tar.FormatPAX}
	if err := s.d.sink.WriteEntry(hdr, cr); err != nil {
		return fmt.Errorf("failed to store %s: %w", name, err)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return err
	}
	if cr.n != size {
		return &IntegrityError{Path: name, Reason: fmt.Sprintf("the spool gave %d bytes, %d expected", cr.n, size)}
	}
	f.Path, f.Size, f.SHA256 = name, size, hexSum(h)
	s.files = append(s.files, f)
	s.d.res.Files = append(s.d.res.Files, f)
	return nil
}

func (s *shellRun) metaJSON(name string, v any) error {
	data, err := jsonIndent(v)
	if err != nil {
		return err
	}
	return s.put(name, int64(len(data)), bytes.NewReader(data), File{})
}

// spool holds one received file: in memory up to inlineSpool, then in a temporary file.
type spool struct {
	mem   bytes.Buffer
	file  *os.File
	n     int64
	limit int64 // bytes kept; more is counted in over and ends the copy
	over  bool
	h     interface{ Write([]byte) (int, error) }
}

var errCapped = errors.New("size cap reached")

func (sp *spool) Write(p []byte) (int, error) {
	keep := int64(len(p))
	if sp.limit >= 0 && sp.n+keep > sp.limit {
		keep = sp.limit - sp.n
		sp.over = true
	}
	if keep > 0 {
		if sp.file == nil && int64(sp.mem.Len())+keep > inlineSpool {
			f, err := os.CreateTemp("", "warren-shell-spool-*")
			if err != nil {
				return 0, err
			}
			os.Remove(f.Name()) // unlinked at once: nothing left behind whatever happens
			if _, err := f.Write(sp.mem.Bytes()); err != nil {
				f.Close()
				return 0, err
			}
			sp.mem.Reset()
			sp.file = f
		}
		var err error
		if sp.file != nil {
			_, err = sp.file.Write(p[:keep])
		} else {
			sp.mem.Write(p[:keep])
		}
		if err != nil {
			return 0, err
		}
		sp.n += keep
	}
	if sp.over {
		return int(keep), errCapped
	}
	return len(p), nil
}

func (sp *spool) reader() (io.Reader, error) {
	if sp.file == nil {
		return bytes.NewReader(sp.mem.Bytes()), nil
	}
	if _, err := sp.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return io.LimitReader(sp.file, sp.n), nil
}

func (sp *spool) close() {
	if sp.file != nil {
		sp.file.Close()
	}
}

// octalEscape writes a name for printf %b: backslashes doubled, bytes that are not printable ASCII as \0NNN.
func octalEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\0%03o`, c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// toolArgv is argv for running a tool on one target path: the path as its own argv element, or, when it is not
// valid UTF-8 (argv travels as UTF-8 strings), through the decoding script.
func toolArgv(tool, p string) []string {
	if !strings.HasPrefix(p, "/") {
		panic("collector: relative target path " + EscapeName(p)) // a leading dash could then read as an option
	}
	if utf8.ValidString(p) {
		switch tool {
		case "cat":
			return []string{"cat", p}
		case "readlink":
			return []string{"readlink", p}
		}
	}
	return shArgv(tool+"decoded", octalEscape(p))
}

// fetch copies one target file with cat, keeping at most limit bytes (negative: no bound). It reports the spool,
// and whether the file went past the limit; a failure is returned with the reason for the skip.
func (s *shellRun) fetch(ctx context.Context, p string, limit int64) (*spool, error) {
	sp := &spool{limit: limit}
	stderr, err := s.d.run(ctx, toolArgv("cat", p), nil, sp)
	if err != nil && !(sp.over && (errors.Is(err, errCapped) || ctx.Err() == nil)) {
		sp.close()
		return nil, &catError{stderr: stderr, err: err}
	}
	return sp, nil
}

type catError struct {
	stderr string
	err    error
}

func (e *catError) Error() string { return errText(e.err, e.stderr) }

func (e *catError) reason() string {
	switch {
	case strings.Contains(e.stderr, "No such file"), strings.Contains(e.stderr, "No such process"):
		return ReasonNotFound
	case strings.Contains(e.stderr, "Permission denied"), strings.Contains(e.stderr, "Operation not permitted"):
		return ReasonPermission
	case strings.Contains(e.stderr, "Is a directory"):
		return ReasonSpecial
	}
	return ReasonError
}

// copyFile fetches p and stores it as name; transform (environ redaction) may rewrite small files.
func (s *shellRun) copyFile(ctx context.Context, name, p string, limit int64, quiet bool, transform func([]byte) ([]byte, File)) error {
	if s.copied[p] {
		return nil
	}
	if s.outOfTime() {
		s.skip(p, ReasonTimeBudget, "")
		return nil
	}
	if why := s.secret(p); why != "" && !s.d.opts.CopySecrets {
		s.skip(p, ReasonSecret, why)
		return nil
	}
	room := int64(-1)
	if s.d.opts.MaxBytes >= 0 {
		room = max(s.d.opts.MaxBytes-s.stored, 0)
		if room == 0 {
			s.skip(p, ReasonMaxBytes, "")
			return nil
		}
	}
	keep, note := limit, ReasonSizeCap
	if room >= 0 && (keep < 0 || room < keep) {
		keep, note = room, ReasonMaxBytes
	}
	sp, err := s.fetch(ctx, p, keep)
	if err != nil {
		var ce *catError
		if errors.As(err, &ce) {
			if quiet && ce.reason() == ReasonNotFound {
				return nil
			}
			s.skip(p, ce.reason(), ce.Error())
			return nil
		}
		return err
	}
	defer sp.close()
	s.copied[p] = true
	f := File{Source: EscapeName(p)}
	if sp.over {
		f.OrigSize, f.Note = -1, note // cat was stopped at the cap: the original's size is not known
	}
	if transform != nil && sp.file == nil {
		data, tf := transform(sp.mem.Bytes())
		if tf.Note != "" {
			f.OrigSize, f.OrigSHA256, f.Note = tf.OrigSize, tf.OrigSHA256, joinNote(f.Note, tf.Note)
		}
		s.stored += int64(len(data))
		return s.put(name, int64(len(data)), bytes.NewReader(data), f)
	}
	r, err := sp.reader()
	if err != nil {
		return err
	}
	s.stored += sp.n
	return s.put(name, sp.n, r, f)
}

// script runs a constant script and returns its NUL-separated output fields (bounded).
func (s *shellRun) script(ctx context.Context, name string, args ...string) ([]string, error) {
	out := &limitedBuffer{max: 64 << 20}
	_, err := s.d.run(ctx, shArgv(name, args...), nil, out)
	f := strings.Split(out.String(), "\x00")
	if len(f) > 0 && f[len(f)-1] == "" {
		f = f[:len(f)-1]
	}
	if out.truncated {
		s.skip("script "+name, ReasonSizeCap, "output cut at 64 MiB")
	}
	return f, err
}

func (s *shellRun) processes(ctx context.Context) error {
	f, err := s.script(ctx, "pids")
	if err != nil {
		return fmt.Errorf("collector: listing processes in shell mode: %w", err)
	}
	selfPID := ""
	var pids []int
	for i := 0; i < len(f); i++ {
		if f[i] == "self" && i+1 < len(f) {
			selfPID = f[i+1]
			i++
			continue
		}
		if n, err := strconv.Atoi(f[i]); err == nil && n > 0 && f[i] != selfPID {
			pids = append(pids, n)
		}
	}
	if s.d.opts.PIDs != nil {
		pids = append([]int(nil), s.d.opts.PIDs...)
	}
	sort.Ints(pids)
	procs := map[int]*Process{}
	if sp, err := s.fetch(ctx, "/proc/stat", 1<<20); err == nil {
		for _, line := range strings.Split(sp.mem.String(), "\n") {
			if v, ok := strings.CutPrefix(line, "btime "); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					s.bootTime = time.Unix(n, 0)
				}
			}
		}
		sp.close()
	}
	for _, pid := range pids {
		if s.outOfTime() {
			s.skip("/proc/"+strconv.Itoa(pid), ReasonTimeBudget, "")
			continue
		}
		pr := &Process{PID: pid, Namespaces: map[string]string{}, FDs: map[string]string{}}
		procs[pid] = pr
		for _, name := range []string{"cmdline", "comm", "environ", "status", "stat", "maps", "cgroup"} {
			src := fmt.Sprintf("/proc/%d/%s", pid, name)
			var tf func([]byte) ([]byte, File)
			switch name {
			case "environ":
				tf = s.redactEnviron
			case "cmdline":
				tf = func(b []byte) ([]byte, File) {
					for _, a := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
						pr.Cmdline = append(pr.Cmdline, EscapeName(a))
					}
					return b, File{}
				}
			case "status":
				tf = func(b []byte) ([]byte, File) { pr.UID, pr.GID, pr.State, pr.PPID = parseStatus(b); return b, File{} }
			case "stat":
				tf = func(b []byte) ([]byte, File) {
					r := run{bootTime: s.bootTime}
					if pr.Started = r.startTime(b); !pr.Started.IsZero() && (s.oldestStart.IsZero() || pr.Started.Before(s.oldestStart)) {
						s.oldestStart = pr.Started
					}
					return b, File{}
				}
			case "comm":
				tf = func(b []byte) ([]byte, File) {
					pr.Comm = EscapeName(strings.TrimSuffix(string(b), "\n"))
					return b, File{}
				}
			}
			if err := s.copyFile(ctx, fmt.Sprintf("container/proc/%d/%s", pid, name), src, procFileMax, false, tf); err != nil {
				return err
			}
		}
	}
	if s.p.tools["readlink"] && len(pids) > 0 {
		if err := s.links(ctx, pids, procs); err != nil {
			return err
		}
	} else if len(pids) > 0 {
		s.skip("/proc/*/{exe,cwd,root,ns,fd}", ReasonNoTool, "no readlink in the image: process links not read")
	}
	for _, name := range netFiles {
		if err := s.copyFile(ctx, "container/proc/net/"+name, "/proc/self/net/"+name, procFileMax, false, nil); err != nil {
			return err
		}
	}
	var list []*Process
	for _, pid := range pids {
		pr := procs[pid]
		if pr == nil {
			continue
		}
		if pr.ExeDeleted {
			name := fmt.Sprintf("container/proc/%d/exe.deleted", pid)
			if err := s.copyFile(ctx, name, fmt.Sprintf("/proc/%d/exe", pid), s.d.opts.MaxExeBytes, false, nil); err != nil {
				return err
			}
			if n := len(s.files); n > 0 && s.files[n-1].Path == name {
				pr.ExeCopy = name
				if s.files[n-1].Note == "" {
					pr.ExeSHA256 = s.files[n-1].SHA256
				}
			}
		}
		list = append(list, pr)
	}
	if len(pids) > 0 {
		s.skip("/proc/*/exe", ReasonNoTool, "shell mode hashes what it copies; executables still on disk are not copied, so not hashed")
	}
	if list == nil {
		list = []*Process{}
	}
	if err := s.metaJSON("container/processes.json", list); err != nil {
		return err
	}
	data := []byte(pstree(list))
	if err := s.put("container/pstree.txt", int64(len(data)), bytes.NewReader(data), File{}); err != nil {
		return err
	}
	for _, name := range []string{"mountinfo", "cgroup", "mounts"} {
		if err := s.copyFile(ctx, "container/proc/"+name, "/proc/self/"+name, procFileMax, false, nil); err != nil {
			return err
		}
	}
	return nil
}

// secret says why p is secret material: on a Kubernetes secret mount, or by name a private key or credential
// file (shell mode cannot look inside a file without copying it out, so it judges by name only).
func (s *shellRun) secret(p string) string {
	if m, ok := s.p.mounts.secretAt(p); ok {
		return "on " + m.Point + ": " + m.Secret
	}
	if strings.Contains(p, "/.ssh/") {
		if base := path.Base(p); strings.HasPrefix(base, "id_") && !strings.HasSuffix(base, ".pub") {
			return "a private key (by name)"
		}
	}
	for _, n := range homeSecrets {
		if strings.HasSuffix(p, "/"+n) {
			return "a credential file (" + n + ")"
		}
	}
	return ""
}

func (s *shellRun) redactEnviron(b []byte) ([]byte, File) {
	red, names := s.redactor.RedactEnviron(b)
	if names == nil {
		return b, File{}
	}
	f := File{OrigSize: int64(len(b)), Note: "redacted: " + strings.Join(escapeAll(names), ",")}
	if s.d.opts.HashRedactedOriginals {
		f.OrigSHA256 = sum(b)
	}
	return red, f
}

// links reads every process's links in batches of PIDs, one exec per batch.
func (s *shellRun) links(ctx context.Context, pids []int, procs map[int]*Process) error {
	const batch = 200
	for i := 0; i < len(pids); i += batch {
		var args []string
		for _, pid := range pids[i:min(i+batch, len(pids))] {
			args = append(args, strconv.Itoa(pid))
		}
		f, err := s.script(ctx, "links", args...)
		if err != nil && len(f) == 0 {
			s.skip("/proc/*/links", ReasonError, err.Error())
			continue
		}
		for j := 0; j+1 < len(f); j += 2 {
			p, target := f[j], strings.TrimSuffix(f[j+1], "\n")
			rest, ok := strings.CutPrefix(p, "/proc/")
			if !ok {
				continue
			}
			pidStr, what, _ := strings.Cut(rest, "/")
			pid, _ := strconv.Atoi(pidStr)
			pr := procs[pid]
			if pr == nil {
				continue
			}
			if f[j+1] == "" {
				s.skip(p, ReasonPermission, "readlink failed")
				continue
			}
			switch {
			case what == "exe":
				pr.Exe, pr.ExeDeleted = EscapeName(target), strings.HasSuffix(target, " (deleted)")
			case what == "cwd":
				pr.Cwd = EscapeName(target)
			case what == "root":
				pr.Root = EscapeName(target)
			case strings.HasPrefix(what, "ns/"):
				pr.Namespaces[strings.TrimPrefix(what, "ns/")] = target
			case strings.HasPrefix(what, "fd/"):
				pr.FDs[strings.TrimPrefix(what, "fd/")] = EscapeName(target)
			}
		}
	}
	return nil
}

// walk lists dir down to depth levels: type and path of each entry.
func (s *shellRun) walk(ctx context.Context, dir string, depth int) ([][2]string, error) {
	f, err := s.script(ctx, "walk", dir, strconv.Itoa(depth))
	var out [][2]string
	for i := 0; i+1 < len(f); i += 2 {
		out = append(out, [2]string{f[i], f[i+1]})
	}
	if err != nil && out == nil {
		return nil, err
	}
	return out, nil
}

func (s *shellRun) hasData(ctx context.Context, dir string) bool {
	ents, _ := s.walk(ctx, dir, 0)
	for _, e := range ents {
		if path.Base(e[1]) == "..data" {
			return true
		}
	}
	return false
}

func (s *shellRun) config(ctx context.Context) error {
	limit := s.d.opts.MaxFileBytes
	for _, p := range configFiles {
		if err := s.copyFile(ctx, archiveFS(p), p, limit, true, nil); err != nil {
			return err
		}
	}
	for _, cd := range configDirs {
		ents, _ := s.walk(ctx, cd.dir, cd.depth)
		for _, e := range ents {
			if e[0] == "f" {
				if err := s.copyFile(ctx, archiveFS(e[1]), e[1], limit, false, nil); err != nil {
					return err
				}
			}
		}
	}
	homes := []string{"/root"}
	if sp, err := s.fetch(ctx, "/etc/passwd", 1<<20); err == nil {
		data := append([]byte(nil), sp.mem.Bytes()...)
		sp.close()
		for _, line := range strings.Split(string(data), "\n") {
			if fl := strings.Split(line, ":"); len(fl) >= 6 && strings.HasPrefix(fl[5], "/") && path.Clean(fl[5]) != "/" {
				if !contains(homes, path.Clean(fl[5])) {
					homes = append(homes, path.Clean(fl[5]))
				}
			}
		}
	}
	for _, h := range homes {
		ents, _ := s.walk(ctx, h, 2)
		for _, e := range ents {
			if e[0] != "f" {
				continue
			}
			rel := strings.TrimPrefix(e[1], h+"/")
			switch {
			case contains(homeFiles, rel):
			case strings.HasPrefix(rel, ".ssh/"), contains(homeSecrets, rel):
			default:
				continue
			}
			if err := s.copyFile(ctx, archiveFS(e[1]), e[1], limit, false, nil); err != nil {
				return err
			}
		}
	}
	for _, d := range tmpDirs {
		ents, _ := s.walk(ctx, d, 8)
		for _, e := range ents {
			if e[0] == "f" {
				if err := s.copyFile(ctx, archiveFS(e[1]), e[1], s.d.opts.MaxTmpFileBytes, false, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// listing walks the bodyfile roots, writes container/bodyfile.txt (with stat) or container/listing.txt (without),
// then copies recent files (with stat) and, in the full profile, every file.
func (s *shellRun) listing(ctx context.Context) error {
	var ents [][2]string
	for _, r := range s.d.opts.BodyfileRoots {
		top, err := s.walk(ctx, strings.TrimSuffix(r, "/"), 0)
		if err != nil {
			s.skip(r, ReasonError, err.Error())
			continue
		}
		for _, e := range top {
			if excludedPath(s.d.opts.Exclude, e[1]) {
				s.skip(e[1], ReasonExcluded, "excluded subtree")
				continue
			}
			if m, ok := s.p.mounts.pseudoAt(e[1]); ok {
				s.skip(e[1], ReasonExcluded, m.FSType+" filesystem")
				continue
			}
			ents = append(ents, e)
			if e[0] == "d" && !s.outOfTime() {
				sub, _ := s.walk(ctx, e[1], maxDepth)
				ents = append(ents, sub...)
			}
		}
	}
	meta := map[string]statLine{}
	if s.p.tools["stat"] {
		meta = s.statAll(ctx, ents)
	} else {
		s.skip("bodyfile", ReasonNoTool, "no stat in the image: container/listing.txt has names and types only, and no recent files are chosen")
	}
	var body bytes.Buffer
	for _, e := range ents {
		st, ok := meta[e[1]]
		if !ok {
			fmt.Fprintf(&body, "%s %s\n", e[0], EscapeName(e[1]))
			continue
		}
		name := escapeBodyfile(e[1])
		fmt.Fprintf(&body, "0|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n", name, st.ino, modeString(st.mode), st.uid, st.gid,
			st.size, st.atime, st.mtime, st.ctime, st.crtime)
	}
	listName := "container/bodyfile.txt"
	if !s.p.tools["stat"] {
		listName = "container/listing.txt"
	}
	if err := s.put(listName, int64(body.Len()), bytes.NewReader(body.Bytes()), File{}); err != nil {
		return err
	}
	since := s.d.opts.RecentSince
	if since.IsZero() {
		since = s.oldestStart
	}
	for _, e := range ents {
		st, ok := meta[e[1]]
		if e[0] != "f" || !ok || since.IsZero() {
			continue
		}
		m, _ := strconv.ParseInt(st.mtime, 10, 64)
		c, _ := strconv.ParseInt(st.ctime, 10, 64)
		if m >= since.Unix() || c >= since.Unix() {
			if err := s.copyFile(ctx, archiveFS(e[1]), e[1], s.d.opts.MaxFileBytes, false, nil); err != nil {
				return err
			}
		}
	}
	if s.d.opts.Profile == ProfileFull {
		for _, e := range ents {
			if e[0] == "f" {
				if err := s.copyFile(ctx, archiveFS(e[1]), e[1], -1, false, nil); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func excludedPath(excl []string, p string) bool {
	for _, x := range excl {
		if path.Clean(x) == p {
			return true
		}
	}
	return false
}

type statLine struct {
	ino, uid, gid, size, atime, mtime, ctime, crtime string
	mode                                             uint32
}

// statAll stats entries in batches. stat prints "fields name\n" per file it could stat, in argument order; the
// receiver knows which names it asked for, so a name holding newlines or spaces is matched exactly, and a file
// stat could not read is just absent.
func (s *shellRun) statAll(ctx context.Context, ents [][2]string) map[string]statLine {
	out := map[string]statLine{}
	const batchBytes = 8 << 10 // argv travels in the exec URL; the gateway bounds headers at 64 KiB
	var batch []string
	flush := func() {
		if len(batch) == 0 {
			return
		}
		buf := &limitedBuffer{max: 16 << 20}
		_, _ = s.d.run(ctx, shArgv("stat", batch...), nil, buf)
		parseStat(buf.Bytes(), batch, out)
		batch = batch[:0]
	}
	size := 0
	for _, e := range ents {
		if s.outOfTime() {
			s.skip("bodyfile", ReasonTimeBudget, "later entries have no metadata")
			break
		}
		if !utf8.ValidString(e[1]) {
			buf := &limitedBuffer{max: 4 << 10}
			if _, err := s.d.run(ctx, shArgv("statdecoded", octalEscape(e[1])), nil, buf); err == nil {
				parseStat(append(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte(" "+e[1]+"\n")...), []string{e[1]}, out)
			}
			continue
		}
		if size+len(e[1]) > batchBytes {
			flush()
			size = 0
		}
		batch = append(batch, e[1])
		size += len(e[1]) + 1
	}
	flush()
	return out
}

func parseStat(data []byte, names []string, out map[string]statLine) {
	r := bufio.NewReaderSize(bytes.NewReader(data), 64<<10)
	next := 0 // the first name not yet matched
	for next < len(names) {
		var fields []string
		for len(fields) < 9 {
			tok, err := r.ReadString(' ')
			if err != nil || strings.Contains(tok, "\n") {
				return
			}
			fields = append(fields, strings.TrimSuffix(tok, " "))
		}
		// The name follows; a file stat could not read has no line, so try the names still expected in order.
		matched := -1
		for j := next; j < len(names); j++ {
			want := names[j] + "\n"
			if got, err := r.Peek(len(want)); err == nil && string(got) == want {
				matched = j
				_, _ = r.Discard(len(want))
				break
			}
		}
		if matched < 0 {
			return
		}
		next = matched + 1
		mode, err := strconv.ParseUint(fields[1], 16, 32)
		if err != nil {
			continue
		}
		crtime := fields[8]
		if _, err := strconv.ParseInt(crtime, 10, 64); err != nil {
			crtime = "0"
		}
		out[names[matched]] = statLine{ino: fields[0], mode: uint32(mode), uid: fields[2], gid: fields[3], size: fields[4],
			atime: fields[5], mtime: fields[6], ctime: fields[7], crtime: crtime}
	}
}

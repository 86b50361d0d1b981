package collector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// configFiles are copied in triage after the volatile state: accounts, name resolution, the dynamic linker's
// preload (a classic user-land rootkit hook), shell start-up files and persistence.
var configFiles = []string{
	"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/sudoers",
	"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/os-release", "/usr/lib/os-release",
	"/etc/alpine-release", "/etc/debian_version", "/etc/redhat-release",
	"/etc/ld.so.preload", "/etc/ld.so.conf",
	"/etc/profile", "/etc/bash.bashrc", "/etc/bashrc", "/etc/environment", "/etc/rc.local", "/etc/inittab",
	"/etc/ssh/sshd_config",
	"/etc/crontab", "/etc/anacrontab",
}

// configDirs are copied with their files (depth: how many directory levels below).
var configDirs = []struct {
	dir   string
	depth int
}{
	{"/etc/sudoers.d", 0}, {"/etc/ld.so.conf.d", 0}, {"/etc/profile.d", 0}, {"/etc/ssh/sshd_config.d", 0},
	{"/etc/cron.d", 0}, {"/etc/cron.hourly", 0}, {"/etc/cron.daily", 0}, {"/etc/cron.weekly", 0},
	{"/etc/cron.monthly", 0}, {"/var/spool/cron", 3}, {"/var/spool/anacron", 1}, {"/etc/periodic", 2},
	{"/etc/systemd/system", 2}, {"/etc/update-motd.d", 0},
}

// homeFiles are copied from each home directory: shell and tool histories, shell start-up files.
var homeFiles = []string{
	".bash_history", ".sh_history", ".ash_history", ".zsh_history", ".history", ".python_history",
	".mysql_history", ".psql_history", ".sqlite_history", ".rediscli_history", ".node_repl_history", ".lesshst",
	".viminfo", ".wget-hsts", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".profile", ".zshrc",
	".zprofile", ".zshenv", ".cshrc", ".tcshrc", ".kshrc", ".mkshrc",
}

// homeSecrets are credential files of a home directory: listed (reason secret) unless CopySecrets.
var homeSecrets = []string{
	".aws/credentials", ".kube/config", ".docker/config.json", ".git-credentials", ".netrc", ".pgpass", ".my.cnf",
	".config/gcloud/application_default_credentials.json", ".config/gcloud/credentials.db", ".azure/accessTokens.json",
}

// tmpDirs hold what attackers drop; their small files are copied.
var tmpDirs = []string{"/tmp", "/var/tmp", "/dev/shm"}

// copyRegular opens p in the target (symlinks followed inside the root) and copies it if it is a regular file,
// within limit; secret files are skipped unless CopySecrets. Missing files are silent when quiet.
func (c *run) copyRegular(p string, limit int64, quiet bool) error {
	return c.copyFile(p, limit, quiet, true)
}

// copyFile is copyRegular; follow false refuses a symlink as the last component (a file the walk listed).
func (c *run) copyFile(p string, limit int64, quiet, follow bool) error {
	if c.stored[p] {
		return nil
	}
	if c.e.outOfTime() {
		c.e.skip(p, ReasonTimeBudget, "")
		return nil
	}
	f, err := c.fs.open(p, unix.O_RDONLY|unix.O_NONBLOCK, !follow)
	if err != nil {
		if quiet && (errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR)) {
			return nil
		}
		c.e.skipErr(p, err)
		return nil
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		c.e.skipErr(p, err)
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			c.e.skip(p, ReasonSpecial, fileType(uint32(st.Mode)))
		}
		return nil
	}
	if c.selfDev != 0 && uint64(st.Dev) == c.selfDev && st.Ino == c.selfIno {
		c.e.skip(p, ReasonSelf, "the collector's own file")
		return nil
	}
	if why := c.secretFile(p, st, f); why != "" && !c.opts.CopySecrets {
		c.e.skip(p, ReasonSecret, why)
		return nil
	}
	c.stored[p] = true
	return c.e.file(archiveFS(p), p, f, st.Size, time.Unix(st.Mtim.Unix()), limit)
}

// secretFile says why a file is secret material: on a Kubernetes secret mount (by device, so links into one
// count), a private key, or a known credential file.
func (c *run) secretFile(p string, st unix.Stat_t, f *os.File) string {
	if m, ok := c.secretDevs[uint64(st.Dev)]; ok {
		return "on " + EscapeName(m.Point) + ": " + m.Secret
	}
	if m, ok := c.mounts.secretAt(p); ok {
		return "on " + EscapeName(m.Point) + ": " + m.Secret
	}
	base := path.Base(p)
	if strings.Contains(p, "/.ssh/") && st.Size < 64<<10 {
		head := make([]byte, 4096)
		n, _ := f.ReadAt(head, 0)
		if bytes.Contains(head[:n], []byte("PRIVATE KEY-----")) {
			return "a private key"
		}
		if strings.HasPrefix(base, "id_") && !strings.HasSuffix(base, ".pub") {
			return "a private key (by name)"
		}
	}
	for _, s := range homeSecrets {
		if strings.HasSuffix(p, "/"+s) {
			return "a credential file (" + s + ")"
		}
	}
	return ""
}

// copyDir copies the regular files of dir, depth levels of subdirectories deep, in name order.
func (c *run) copyDir(dir string, depth int, limit int64) error {
	names, err := c.readDirNames(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
			c.e.skipErr(dir, err)
		}
		return nil
	}
	for _, n := range names {
		p := path.Join(dir, n)
		var st unix.Stat_t
		f, err := c.fs.open(p, unix.O_PATH, true)
		if err != nil {
			c.e.skipErr(p, err)
			continue
		}
		err = unix.Fstat(int(f.Fd()), &st)
		f.Close()
		if err != nil {
			c.e.skipErr(p, err)
			continue
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if depth > 0 {
				if err := c.copyDir(p, depth-1, limit); err != nil {
					return err
				}
			}
		case unix.S_IFLNK:
			// listed in the bodyfile with its target; a link in a persistence directory is not followed out
		default:
			if err := c.copyRegular(p, limit, false); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *run) readDirNames(dir string) ([]string, error) {
	f, err := c.fs.open(dir, unix.O_RDONLY|unix.O_DIRECTORY, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// homes are the home directories of /etc/passwd's accounts, /root and /home/*, once each.
func (c *run) homes() []string {
	seen := map[string]bool{}
	var out []string
	add := func(h string) {
		h = path.Clean(h)
		if h == "/" || h == "." || seen[h] || strings.HasPrefix(h, "/proc") || strings.HasPrefix(h, "/sys") ||
			strings.HasPrefix(h, "/dev") {
			return
		}
		seen[h] = true
		out = append(out, h)
	}
	add("/root")
	if f, err := c.fs.open("/etc/passwd", unix.O_RDONLY, false); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fields := strings.Split(sc.Text(), ":"); len(fields) >= 6 && strings.HasPrefix(fields[5], "/") {
				add(fields[5])
			}
		}
		f.Close()
	}
	if names, err := c.readDirNames("/home"); err == nil {
		for _, n := range names {
			add("/home/" + n)
		}
	}
	return out
}

func (c *run) collectConfig() error {
	for _, p := range configFiles {
		if err := c.copyRegular(p, c.opts.MaxFileBytes, true); err != nil {
			return err
		}
	}
	for _, d := range configDirs {
		if err := c.copyDir(d.dir, d.depth, c.opts.MaxFileBytes); err != nil {
			return err
		}
	}
	for _, h := range c.homes() {
		for _, n := range homeFiles {
			if err := c.copyRegular(h+"/"+n, c.opts.MaxFileBytes, true); err != nil {
				return err
			}
		}
		if err := c.copyDir(h+"/.ssh", 1, c.opts.MaxFileBytes); err != nil {
			return err
		}
		for _, n := range homeSecrets {
			if err := c.copyRegular(h+"/"+n, c.opts.MaxFileBytes, true); err != nil {
				return err
			}
		}
	}
	for _, d := range tmpDirs {
		if err := c.copyDir(d, 8, c.opts.MaxTmpFileBytes); err != nil {
			return err
		}
	}
	return nil
}

// maxCandidates bounds the files remembered from the walk for the recent and full phases.
const maxCandidates = 1 << 20

// maxBodyfile bounds container/bodyfile.txt.
const maxBodyfile = 256 << 20

type candidate struct {
	path   string
	recent bool
}

// walkState is one bodyfile walk: lines written, files remembered.
type walkState struct {
	body       bytes.Buffer
	candidates []candidate
	full       bool // bodyfile bound reached
	dropped    int  // candidates beyond maxCandidates
}

// collectBodyfile walks BodyfileRoots (symlinks not followed, pseudo filesystems and Exclude not entered, secret
// mounts listed but their files not read), writes container/bodyfile.txt and returns the regular files seen.
func (c *run) collectBodyfile() (*walkState, error) {
	w := &walkState{}
	for _, r := range c.opts.BodyfileRoots {
		if c.e.outOfTime() {
			c.e.skip(r, ReasonTimeBudget, "not listed")
			continue
		}
		f, err := c.fs.open(r, unix.O_RDONLY|unix.O_DIRECTORY, false)
		if err != nil {
			c.e.skipErr(r, err)
			continue
		}
		var stx unix.Statx_t
		if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx); err == nil {
			c.bodyLine(w, path.Clean(r), &stx, "")
		}
		err = c.walkDir(w, int(f.Fd()), path.Clean(r), 0)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if w.dropped > 0 {
		c.e.skip("walk", ReasonError, fmt.Sprintf("%d files beyond the %d remembered were not considered for copying", w.dropped, maxCandidates))
	}
	return w, c.e.meta("container/bodyfile.txt", w.body.Bytes())
}

// maxDepth bounds the walk's recursion.
const maxDepth = 128

func (c *run) walkDir(w *walkState, dirfd int, dir string, depth int) error {
	if depth > maxDepth {
		c.e.skip(dir, ReasonError, "deeper than the walk's bound")
		return nil
	}
	f := os.NewFile(uintptr(dirfdDup(dirfd)), dir)
	if f == nil {
		return nil
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		c.e.skipErr(dir, err)
	}
	sort.Strings(names)
	for _, n := range names {
		if c.e.outOfTime() {
			c.e.skip(dir, ReasonTimeBudget, "listing stopped here")
			return nil
		}
		p := path.Join(dir, n)
		if c.isExcluded(p) {
			continue
		}
		var stx unix.Statx_t
		if err := unix.Statx(dirfd, n, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx); err != nil {
			c.e.skipErr(p, err)
			continue
		}
		mode := uint32(stx.Mode)
		link := ""
		if mode&unix.S_IFMT == unix.S_IFLNK {
			link, _ = readlinkat(dirfd, n)
		}
		c.bodyLine(w, p, &stx, link)
		switch mode & unix.S_IFMT {
		case unix.S_IFREG:
			recent := c.isRecent(&stx)
			if len(w.candidates) < maxCandidates {
				w.candidates = append(w.candidates, candidate{path: p, recent: recent})
			} else {
				w.dropped++
			}
		case unix.S_IFDIR:
			if m, ok := c.mounts.pseudoAt(p); ok {
				c.e.skip(p, ReasonExcluded, m.FSType+" filesystem")
				continue
			}
			fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				c.e.skipErr(p, err)
				continue
			}
			err = c.walkDir(w, fd, p, depth+1)
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func dirfdDup(fd int) int {
	// Readdirnames consumes the descriptor's position; a dup shares it, but the walk reads each directory once.
	n, err := unix.Dup(fd)
	if err != nil {
		return -1
	}
	return n
}

func (c *run) isExcluded(p string) bool {
	for _, x := range c.opts.Exclude {
		if p == path.Clean(x) {
			if !c.excludedSeen[p] {
				c.excludedSeen[p] = true
				c.e.skip(p, ReasonExcluded, "excluded subtree")
			}
			return true
		}
	}
	return false
}

func (c *run) isRecent(stx *unix.Statx_t) bool {
	since := c.opts.RecentSince
	if since.IsZero() {
		since = c.oldestStart
	}
	if since.IsZero() {
		return false
	}
	s := since.Unix()
	return stx.Mtime.Sec >= s || stx.Ctime.Sec >= s
}

// bodyLine appends one line in the Sleuth Kit's bodyfile 3 format:
// MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime, MD5 0 (not computed; copied files carry
// SHA-256 in the manifest), a symlink's name as "path -> target", names escaped (escapeBodyfile).
func (c *run) bodyLine(w *walkState, p string, stx *unix.Statx_t, link string) {
	if w.full {
		return
	}
	name := escapeBodyfile(p)
	if link != "" {
		name += " -> " + escapeBodyfile(link)
	}
	crtime := int64(0)
	if stx.Mask&unix.STATX_BTIME != 0 {
		crtime = stx.Btime.Sec
	}
	line := "0|" + name + "|" + strconv.FormatUint(stx.Ino, 10) + "|" + modeString(uint32(stx.Mode)) + "|" +
		strconv.FormatUint(uint64(stx.Uid), 10) + "|" + strconv.FormatUint(uint64(stx.Gid), 10) + "|" +
		strconv.FormatUint(stx.Size, 10) + "|" + strconv.FormatInt(stx.Atime.Sec, 10) + "|" +
		strconv.FormatInt(stx.Mtime.Sec, 10) + "|" + strconv.FormatInt(stx.Ctime.Sec, 10) + "|" +
		strconv.FormatInt(crtime, 10) + "\n"
	if w.body.Len()+len(line) > maxBodyfile {
		w.full = true
		c.e.skip(p, ReasonSizeCap, fmt.Sprintf("bodyfile reached %d bytes; later entries not listed", maxBodyfile))
		return
	}
	w.body.WriteString(line)
}

// modeString is the Sleuth Kit's mode_as_string: name type, '/', meta type and permissions ("r/rrw-r--r--").
func modeString(m uint32) string {
	t := byte('-')
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		t = 'r'
	case unix.S_IFDIR:
		t = 'd'
	case unix.S_IFLNK:
		t = 'l'
	case unix.S_IFCHR:
		t = 'c'
	case unix.S_IFBLK:
		t = 'b'
	case unix.S_IFIFO:
		t = 'p'
	case unix.S_IFSOCK:
		t = 's'
	}
	b := []byte{t, '/', t}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	special := func(bit uint32, pos int, set, unset byte) {
		if m&bit != 0 {
			if b[pos] == '-' {
				b[pos] = unset
			} else {
				b[pos] = set
			}
		}
	}
	special(unix.S_ISUID, 5, 's', 'S')
	special(unix.S_ISGID, 8, 's', 'S')
	special(unix.S_ISVTX, 11, 't', 'T')
	return string(b)
}

func fileType(m uint32) string {
	switch m & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFLNK:
		return "symlink"
	}
	return "not a regular file"
}

// copyRecent copies the files changed since RecentSince (default: the container's start), then in the full
// profile every other regular file seen, until MaxBytes.
func (c *run) copyRecent(w *walkState) error {
	for _, cd := range w.candidates {
		if !cd.recent {
			continue
		}
		if err := c.copyWalked(cd.path, c.opts.MaxFileBytes); err != nil {
			return err
		}
	}
	if c.opts.Profile != ProfileFull {
		return nil
	}
	for _, cd := range w.candidates {
		if c.e.room() == 0 {
			c.e.skip("full", ReasonMaxBytes, "the rest of the root filesystem not copied")
			return nil
		}
		if c.e.outOfTime() {
			c.e.skip("full", ReasonTimeBudget, "the rest of the root filesystem not copied")
			return nil
		}
		if err := c.copyWalked(cd.path, -1); err != nil {
			return err
		}
	}
	return nil
}

// copyWalked copies a file the walk saw: its last component is not followed, since the walk listed it as a file.
func (c *run) copyWalked(p string, limit int64) error {
	if c.stored[p] {
		return nil
	}
	if m, ok := c.mounts.secretAt(p); ok && !c.opts.CopySecrets {
		c.e.skip(p, ReasonSecret, "on "+EscapeName(m.Point)+": "+m.Secret)
		return nil
	}
	return c.copyFile(p, limit, false, false)
}

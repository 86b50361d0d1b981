package collector

import (
	"errors"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// rootFS opens paths of the target's filesystem below a root directory, resolving symlinks inside it as a chroot
// would (an absolute link target starts again at the root, ".." stops at it), so a planted link to /etc/shadow
// reads the target's shadow, never the collector's host. That matters when the root is /proc/<pid>/root of another
// container (issue 13's ephemeral mode) or a test's temporary tree. It uses openat2(RESOLVE_IN_ROOT) and, on
// kernels before 5.6, resolves component by component itself.
type rootFS struct {
	dir       string
	fd        int // O_PATH descriptor of dir
	noOpenat2 bool
}

func openRootFS(dir string) (*rootFS, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &rootFS{dir: dir, fd: fd}, nil
}

func (r *rootFS) Close() error { return unix.Close(r.fd) }

// maxSymlinks bounds the links followed resolving one path (the kernel's own bound).
const maxSymlinks = 40

// open opens p (absolute, in the target's namespace) with flags. With noFollow the last component must not be a
// symlink.
func (r *rootFS) open(p string, flags int, noFollow bool) (*os.File, error) {
	rel := strings.TrimLeft(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NOCTTY // openat2 refuses flags O_PATH ignores
	}
	if noFollow {
		flags |= unix.O_NOFOLLOW
	}
	if !r.noOpenat2 {
		fd, err := unix.Openat2(r.fd, rel, &unix.OpenHow{Flags: uint64(flags),
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err == nil {
			return os.NewFile(uintptr(fd), p), nil
		}
		if !errors.Is(err, unix.ENOSYS) {
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		r.noOpenat2 = true
	}
	dirfd, last, err := r.resolveParent(rel)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(dirfd)
	if !noFollow {
		// Follow a final symlink inside the root: resolve it as a parent of nothing.
		for i := 0; ; i++ {
			var st unix.Stat_t
			if err := unix.Fstatat(dirfd, last, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
				break
			}
			if i >= maxSymlinks {
				return nil, &os.PathError{Op: "open", Path: p, Err: unix.ELOOP}
			}
			target, err := readlinkat(dirfd, last)
			if err != nil {
				return nil, &os.PathError{Op: "open", Path: p, Err: err}
			}
			var base string
			if !strings.HasPrefix(target, "/") {
				base = r.fdPath(dirfd)
			}
			nfd, nlast, err := r.resolveParent(strings.TrimLeft(path.Clean("/"+base+"/"+target), "/"))
			if err != nil {
				return nil, &os.PathError{Op: "open", Path: p, Err: err}
			}
			unix.Close(dirfd)
			dirfd, last = nfd, nlast
		}
	}
	fd, err := unix.Openat(dirfd, last, flags|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// fdPath is the path (relative to the root) of a directory descriptor that resolveParent returned; it only serves
// relative symlink targets of the fallback resolver.
func (r *rootFS) fdPath(fd int) string {
	full, err := os.Readlink("/proc/self/fd/" + itoa(fd))
	if err != nil {
		return "/"
	}
	rootPath, err := os.Readlink("/proc/self/fd/" + itoa(r.fd))
	if err != nil || !strings.HasPrefix(full, rootPath) {
		return "/"
	}
	return strings.TrimPrefix(full, rootPath)
}

// resolveParent walks rel's directories from the root, following symlinks inside it, and returns an O_PATH
// descriptor of the last directory and the last component ("." for the root itself).
func (r *rootFS) resolveParent(rel string) (int, string, error) {
	comps := splitPath(rel)
	if len(comps) == 0 {
		fd, err := unix.Openat(r.fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fd, ".", err
	}
	var stack []int // descriptors from the root down; stack[0] is a dup of the root
	closeAll := func() {
		for _, fd := range stack {
			unix.Close(fd)
		}
	}
	root, err := unix.Openat(r.fd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	stack = append(stack, root)
	links := 0
	for len(comps) > 1 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1])
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		var st unix.Stat_t
		if err := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			closeAll()
			return -1, "", err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if links++; links > maxSymlinks {
				closeAll()
				return -1, "", unix.ELOOP
			}
			target, err := readlinkat(cur, c)
			if err != nil {
				closeAll()
				return -1, "", err
			}
			if strings.HasPrefix(target, "/") {
				for _, fd := range stack[1:] {
					unix.Close(fd)
				}
				stack = stack[:1]
			}
			comps = append(splitPath(target), comps...)
			continue
		}
		fd, err := unix.Openat(cur, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return -1, "", err
		}
		stack = append(stack, fd)
	}
	last := comps[0]
	if last == ".." {
		if len(stack) > 1 {
			unix.Close(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
		}
		last = "."
	}
	top := stack[len(stack)-1]
	for _, fd := range stack[:len(stack)-1] {
		unix.Close(fd)
	}
	return top, last, nil
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > 1<<16 {
			return "", unix.ENAMETOOLONG
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

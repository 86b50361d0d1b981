package collector

import (
	"path"
	"strconv"
	"strings"
)

// mount is one line of /proc/PID/mountinfo.
type mount struct {
	Point, Root, FSType, Source, Options string
	// SuperOptions are the file system's own options (an overlay's lowerdir, upperdir, workdir), still
	// octal-escaped as mountinfo writes them.
	SuperOptions string
	// Secret says why the mount holds Kubernetes secret material ("" when it does not).
	Secret string
}

// parseMountinfo reads mountinfo lines (proc(5)): ID parent major:minor root point options [optional...] - fstype
// source superoptions. Paths are octal-escaped (\040 for a space).
func parseMountinfo(data []byte) []mount {
	var out []mount
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, v := range f {
			if v == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			continue
		}
		m := mount{Root: unoctal(f[3]), Point: unoctal(f[4]), Options: f[5], FSType: f[sep+1], Source: unoctal(f[sep+2])}
		if len(f) > sep+3 {
			m.SuperOptions = f[sep+3]
		}
		out = append(out, m)
	}
	return out
}

func unoctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pseudoFS are filesystems whose files are not evidence on disk (or are endless); their mounts are not walked.
var pseudoFS = map[string]bool{"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "devpts": true,
	"mqueue": true, "debugfs": true, "tracefs": true, "securityfs": true, "pstore": true, "bpf": true,
	"configfs": true, "fusectl": true, "hugetlbfs": true, "autofs": true, "binfmt_misc": true, "devtmpfs": true,
	"nsfs": true, "selinuxfs": true, "efivarfs": true, "rpc_pipefs": true}

// secretReason says whether a mount is a Kubernetes Secret, projected (service-account token) or CSI secrets
// volume. The kubelet mounts those on tmpfs and the runtime binds the tmpfs root, so the mountinfo root is often
// just "/": the mount point under /var/run/secrets or /run/secrets, the kubelet's volume directory name where it
// shows, or the kubelet's atomic-writer layout (a ..data link) on a tmpfs mark it. hasData reports whether a
// directory holds ..data.
func secretReason(m mount, hasData func(dir string) bool) string {
	for _, pre := range []string{"/var/run/secrets", "/run/secrets"} {
		if m.Point == pre || strings.HasPrefix(m.Point, pre+"/") {
			return "mounted under " + pre
		}
	}
	for _, kind := range []string{"kubernetes.io~secret", "kubernetes.io~projected", "kubernetes.io~csi"} {
		if strings.Contains(m.Root, "/"+kind+"/") || strings.Contains(m.Source, "/"+kind+"/") {
			return "a " + kind + " volume"
		}
	}
	if m.FSType == "tmpfs" && m.Point != "/" && !isStandardTmpfs(m.Point) && hasData(m.Point) {
		return "a tmpfs volume in the kubelet's atomic-writer layout (..data), as Secret and projected volumes are"
	}
	return ""
}

func isStandardTmpfs(p string) bool {
	switch path.Clean(p) {
	case "/dev", "/dev/shm", "/tmp", "/run", "/var/run", "/var/tmp", "/run/lock", "/sys/fs/cgroup":
		return true
	}
	return false
}

// mountTable answers which mount a path is on.
type mountTable []mount

// under returns the secret mount p lies in, if any.
func (t mountTable) secretAt(p string) (mount, bool) {
	best := -1
	for i, m := range t {
		if m.Secret == "" {
			continue
		}
		if (p == m.Point || strings.HasPrefix(p, strings.TrimSuffix(m.Point, "/")+"/")) &&
			(best < 0 || len(m.Point) > len(t[best].Point)) {
			best = i
		}
	}
	if best < 0 {
		return mount{}, false
	}
	return t[best], true
}

// pseudoAt reports whether p is the mount point of a pseudo filesystem.
func (t mountTable) pseudoAt(p string) (mount, bool) {
	for _, m := range t {
		if m.Point == p && pseudoFS[m.FSType] {
			return m, true
		}
	}
	return mount{}, false
}

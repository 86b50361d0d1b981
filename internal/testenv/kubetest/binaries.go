package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/warren-dev/warren/internal/testenv/testproc"
)

// KubeVersion is the Kubernetes version that scripts/kube-bin.sh builds and that the cache directory is named after.
const KubeVersion = "v1.37.2"

// EnvKubeBin names the environment variable that points at a directory holding kube-apiserver and kubectl (and
// optionally etcd). Without it the binaries are looked up in the cache directory that scripts/kube-bin.sh fills.
const EnvKubeBin = "WARREN_KUBE_BIN"

// binaries are the absolute paths of the programs a cluster needs.
type binaries struct {
	etcd, apiserver, kubectl string
}

// binDir returns the directory scripts/kube-bin.sh builds into:
// ${WARREN_KUBE_BIN:-${WARREN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}/k8s-VERSION/bin}.
func binDir() (string, error) {
	if d := os.Getenv(EnvKubeBin); d != "" {
		return d, nil
	}
	cache, err := testproc.CacheDir()
	if err != nil {
		return "", fmt.Errorf("%w (or set %s)", err, EnvKubeBin)
	}
	return filepath.Join(cache, "k8s-"+KubeVersion, "bin"), nil
}

// findBinaries locates kube-apiserver and kubectl in binDir, and etcd there or on $PATH. A missing binary is an error
// that says how to get it: tests that need a cluster must fail, never skip, when it cannot be started.
func findBinaries() (binaries, error) {
	dir, err := binDir()
	if err != nil {
		return binaries{}, err
	}
	var b binaries
	var missing []error
	for _, x := range []struct {
		name string
		dst  *string
	}{{"kube-apiserver", &b.apiserver}, {"kubectl", &b.kubectl}} {
		p := filepath.Join(dir, x.name)
		if err := isExecutable(p); err != nil {
			missing = append(missing, fmt.Errorf("%s %s not found in %s: run scripts/kube-bin.sh, "+
				"or set %s to a directory holding it", x.name, KubeVersion, dir, EnvKubeBin))
			continue
		}
		*x.dst = p
	}
	if p := filepath.Join(dir, "etcd"); isExecutable(p) == nil {
		b.etcd = p
	} else if p, err := exec.LookPath("etcd"); err == nil {
		b.etcd = p
	} else {
		missing = append(missing, fmt.Errorf("etcd not found in %s nor on PATH: run scripts/kube-bin.sh "+
			"(it installs Debian's etcd-server)", dir))
	}
	return b, errors.Join(missing...)
}

// isExecutable reports why path is not an executable file, or nil.
func isExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

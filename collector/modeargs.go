package collector

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"time"
)

// Modes of a collector the container runtime starts (its argv[1]); "collect" is the exec mode's.
const (
	ModeEphemeral = "ephemeral" // an ephemeral container in the target's PID namespace (pods/ephemeralcontainers)
	ModeNode      = "node"      // a pod on the target's node that reads containerd's state and the host's /proc
)

// Node-mode defaults: containerd's own layout (EKS, GKE, AKS, kubeadm, Bottlerocket's host containerd alike).
const (
	DefaultContainerdRoot = "/var/lib/containerd"
	DefaultRuntimeDir     = "/run/containerd/io.containerd.runtime.v2.task"
	// DefaultContainerdNamespace is the namespace the CRI plugin keeps Kubernetes' containers in.
	DefaultContainerdNamespace = "k8s.io"
	// DefaultWait is how long a started collector waits for the acquirer to attach.
	DefaultWait = 5 * time.Minute
)

// ModeArgs are the arguments of a collector started by the container runtime (Args writes them, ParseModeArgs
// reads them back; the connector's check of warren's collector pod parses them too). The collector finds where
// its target is itself (Root, Proc, RootPID and PIDs of Options are not arguments here).
type ModeArgs struct {
	Mode    string  // ModeEphemeral or ModeNode
	Options Options // what to collect and the bounds (commonArgs)
	// Wait bounds the wait for the acquirer's session line on stdin (default DefaultWait).
	Wait time.Duration

	// Ephemeral mode. TargetContainerID (the runtime's id, without its scheme) picks the target's processes by
	// their cgroup when the pod's PID namespace is shared; AsTargetUser makes a collector started as root take
	// the target's user before it reads anything (the pod spec did not say which user the target runs as).
	TargetContainerID string
	AsTargetUser      bool

	// Node mode: the container (containerd's id and namespace), where containerd keeps its running containers'
	// bundles (RuntimeDir/<namespace>/<id>) and its root (the snapshotters' directories). The two directories are
	// mounted read-only at the same paths as on the node.
	ContainerID    string
	Namespace      string
	RuntimeDir     string
	ContainerdRoot string
}

// containerdIDPattern is containerd's identifier grammar (pkg/identifiers): alphanumerics joined by single '.', '_'
// or '-', at most 76 characters; so never "..", "/" or a leading dot.
var containerdIDPattern = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// ValidContainerdID reports whether s is a containerd identifier (a container id or a namespace).
func ValidContainerdID(s string) bool { return len(s) <= 76 && containerdIDPattern.MatchString(s) }

// Args is the collector's argv after the program name.
func (m ModeArgs) Args() []string {
	a := []string{m.Mode}
	a = append(a, commonArgs(m.Options.withDefaults())...)
	wait := m.Wait
	if wait <= 0 {
		wait = DefaultWait
	}
	a = append(a, "--wait="+wait.String())
	switch m.Mode {
	case ModeEphemeral:
		if m.TargetContainerID != "" {
			a = append(a, "--target-container-id="+m.TargetContainerID)
		}
		if m.AsTargetUser {
			a = append(a, "--as-target-user")
		}
	case ModeNode:
		a = append(a, "--container-id="+m.ContainerID, "--namespace="+m.Namespace, "--runtime-dir="+m.RuntimeDir,
			"--containerd-root="+m.ContainerdRoot)
	}
	return a
}

// ParseModeArgs parses what Args wrote. Unknown flags, positional arguments, a flag given twice that takes one
// value, or values that could lead the collector out of its target (a container id with a path in it, a relative
// or unclean directory) are errors.
func ParseModeArgs(args []string) (ModeArgs, error) {
	return parseModeArgs(args, io.Discard)
}

func parseModeArgs(args []string, errOut io.Writer) (ModeArgs, error) {
	var m ModeArgs
	if len(args) == 0 {
		return m, errors.New("no mode (want ephemeral or node)")
	}
	m.Mode = args[0]
	if m.Mode != ModeEphemeral && m.Mode != ModeNode {
		return m, fmt.Errorf("mode %q: want ephemeral or node", EscapeName(m.Mode))
	}
	fs := flag.NewFlagSet("warren-collector "+m.Mode, flag.ContinueOnError)
	fs.SetOutput(errOut)
	finish := commonFlags(fs, &m.Options)
	fs.DurationVar(&m.Wait, "wait", DefaultWait, "how long to wait for the acquirer's session line on stdin")
	once := map[string]bool{}
	single := func(name, usage string, dst *string) {
		fs.Func(name, usage, func(v string) error {
			if once[name] {
				return fmt.Errorf("given twice")
			}
			once[name] = true
			*dst = v
			return nil
		})
	}
	if m.Mode == ModeEphemeral {
		single("target-container-id", "the target container's runtime id (picks its processes by cgroup)", &m.TargetContainerID)
		fs.BoolVar(&m.AsTargetUser, "as-target-user", false, "started as root: take the target's user first")
	} else {
		single("container-id", "containerd's id of the container", &m.ContainerID)
		single("namespace", "containerd namespace of the container", &m.Namespace)
		single("runtime-dir", "containerd's runtime v2 task directory, mounted at the node's path", &m.RuntimeDir)
		single("containerd-root", "containerd's root, mounted at the node's path", &m.ContainerdRoot)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return m, err
	}
	if fs.NArg() > 0 {
		return m, fmt.Errorf("unexpected argument %q", EscapeName(fs.Arg(0)))
	}
	if err := finish(); err != nil {
		return m, err
	}
	if m.Wait <= 0 {
		return m, fmt.Errorf("--wait %v: must be positive", m.Wait)
	}
	switch m.Mode {
	case ModeEphemeral:
		if m.TargetContainerID != "" && !ValidContainerdID(m.TargetContainerID) {
			return m, fmt.Errorf("--target-container-id %q: not a container id", EscapeName(m.TargetContainerID))
		}
	case ModeNode:
		switch {
		case !ValidContainerdID(m.ContainerID):
			return m, fmt.Errorf("--container-id %q: not a containerd container id", EscapeName(m.ContainerID))
		case !ValidContainerdID(m.Namespace):
			return m, fmt.Errorf("--namespace %q: not a containerd namespace", EscapeName(m.Namespace))
		}
		for name, dir := range map[string]string{"--runtime-dir": m.RuntimeDir, "--containerd-root": m.ContainerdRoot} {
			if !CleanAbsDir(dir) {
				return m, fmt.Errorf("%s %q: want an absolute, clean directory path", name, EscapeName(dir))
			}
		}
	}
	return m, nil
}

// CleanAbsDir reports whether p is an absolute, clean path other than "/" without control characters.
func CleanAbsDir(p string) bool {
	if p == "" || p == "/" || !strings.HasPrefix(p, "/") || path.Clean(p) != p || len(p) > 4096 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f || p[i] == ',' || p[i] == ':' {
			return false // and no ',' or ':', which hostPath and mount option lists cannot hold unambiguously
		}
	}
	return true
}

package fakekubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// defaultPath is containerd's PATH for an image that sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// defaultCaps are the capabilities containerd gives a container that is not privileged.
var defaultCaps = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// capNames are the Linux capabilities by number.
var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE"}

// containerSpec is what c's init needs: the process (command and arguments from the image and the spec, environment,
// working directory, user, capabilities) and the mounts (root filesystem, volumes, the kubelet's files, tmpfs).
// Its errors are the container's CreateContainerConfigError.
func (k *Kubelet) containerSpec(pod *corev1.Pod, p *podState, c *container) (*initSpec, error) {
	spec, img := c.spec, c.img
	sc := spec.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	psc := pod.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	env, err := k.containerEnv(pod, spec, img)
	if err != nil {
		return nil, err
	}
	s := &initSpec{
		Rootfs:       filepath.Join(c.dir, "rootfs"),
		Lower:        img.rootfs,
		Upper:        filepath.Join(c.dir, "upper"),
		Work:         filepath.Join(c.dir, "work"),
		ReadOnlyRoot: sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
		Privileged:   sc.Privileged != nil && *sc.Privileged,
		TTY:          spec.TTY,
	}
	proc := &s.Process
	proc.Env = env
	proc.Args = containerArgs(spec, img, env)
	if len(proc.Args) == 0 {
		return nil, fmt.Errorf("no command specified")
	}
	proc.Cwd = spec.WorkingDir
	if proc.Cwd == "" {
		proc.Cwd = img.config.WorkingDir
	}
	if proc.Cwd == "" {
		proc.Cwd = "/"
	}

	// The user: runAsUser and runAsGroup of the container, else of the pod, else the image's.
	uid, gid, userName, err := img.user()
	if err != nil {
		return nil, err
	}
	runAsUser, runAsGroup, runAsNonRoot := psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	if sc.RunAsUser != nil {
		runAsUser = sc.RunAsUser
	}
	if sc.RunAsGroup != nil {
		runAsGroup = sc.RunAsGroup
	}
	if sc.RunAsNonRoot != nil {
		runAsNonRoot = sc.RunAsNonRoot
	}
	if runAsUser != nil {
		uid, userName = uint32(*runAsUser), ""
		gid = 0
		if e, ok := img.passwdEntry(func(f []string) bool { return f[2] == strconv.Itoa(int(uid)) }); ok {
			gid = parseID(e[3])
		}
	}
	if runAsGroup != nil {
		gid = uint32(*runAsGroup)
	}
	if runAsNonRoot != nil && *runAsNonRoot {
		// The kubelet's checks and messages (kuberuntime's verifyRunAsNonRoot).
		switch {
		case userName != "":
			return nil, fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user "+
				"is non-root (pod: %q, container: %s)", userName, podDesc(pod), spec.Name)
		case uid == 0 && runAsUser != nil:
			return nil, fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)",
				podDesc(pod), spec.Name)
		case uid == 0:
			return nil, fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)",
				podDesc(pod), spec.Name)
		}
	}
	proc.UID, proc.GID = uid, gid
	for _, g := range psc.SupplementalGroups {
		proc.Groups = append(proc.Groups, uint32(g))
	}
	if psc.FSGroup != nil {
		proc.Groups = append(proc.Groups, uint32(*psc.FSGroup))
	}
	if !hasEnv(env, "HOME") {
		home := "/"
		if e, ok := img.passwdEntry(func(f []string) bool { return f[2] == strconv.Itoa(int(uid)) }); ok && len(e) > 5 {
			home = e[5]
		}
		proc.Env = append(proc.Env, "HOME="+home) // as runc sets it
	}
	if spec.TTY {
		proc.Env = setEnv(proc.Env, "TERM", "xterm")
	}
	proc.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	if proc.Caps, err = capabilities(s.Privileged, sc.Capabilities); err != nil {
		return nil, err
	}

	s.Mounts, err = containerMounts(pod, p, c)
	return s, err
}

func podDesc(pod *corev1.Pod) string {
	return pod.Name + "_" + pod.Namespace + "(" + string(pod.UID) + ")"
}

// containerArgs are the process's arguments by Kubernetes' rules: command replaces the image's entrypoint (and
// drops its cmd), args replace its cmd; $(VAR) references to the environment are expanded.
func containerArgs(spec corev1.Container, img *image, env []string) []string {
	entrypoint, cmd := img.config.Entrypoint, img.config.Cmd
	if len(spec.Command) > 0 {
		entrypoint, cmd = spec.Command, nil
	}
	if len(spec.Args) > 0 {
		cmd = spec.Args
	}
	vars := map[string]string{}
	for _, e := range env {
		name, value, _ := strings.Cut(e, "=")
		vars[name] = value
	}
	mapping := expansion.MappingFuncFor(vars)
	var args []string
	for _, a := range append(append([]string{}, entrypoint...), cmd...) {
		args = append(args, expansion.Expand(a, mapping))
	}
	return args
}

// containerEnv is the environment as containerd builds it: HOSTNAME, the image's variables (PATH at least), then
// the container's, each replacing a variable of the same name. Values of fieldRef, secretKeyRef and configMapKeyRef
// and envFrom are read as the kubelet does; $(VAR) references to earlier variables are expanded.
func (k *Kubelet) containerEnv(pod *corev1.Pod, spec corev1.Container, img *image) ([]string, error) {
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	env := []string{"HOSTNAME=" + hostname}
	for _, e := range img.config.Env {
		name, value, _ := strings.Cut(e, "=")
		env = setEnv(env, name, value)
	}
	if !hasEnv(env, "PATH") {
		env = append(env, defaultPath)
	}
	ctx := k.ctx
	vars := map[string]string{}
	for _, ef := range spec.EnvFrom {
		var data map[string]string
		switch {
		case ef.SecretRef != nil:
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if ef.SecretRef.Optional != nil && *ef.SecretRef.Optional {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ef.SecretRef.Name)
			}
			data = map[string]string{}
			for key, v := range s.Data {
				data[key] = string(v)
			}
		case ef.ConfigMapRef != nil:
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ef.ConfigMapRef.Name)
			}
			data = cm.Data
		}
		for key, v := range data {
			env = setEnv(env, ef.Prefix+key, v)
			vars[ef.Prefix+key] = v
		}
	}
	mapping := expansion.MappingFuncFor(vars)
	for _, e := range spec.Env {
		v := expansion.Expand(e.Value, mapping)
		if vf := e.ValueFrom; vf != nil {
			var err error
			if v, err = k.envValueFrom(ctx, pod, vf); err != nil {
				return nil, err
			}
		}
		vars[e.Name] = v
		env = setEnv(env, e.Name, v)
	}
	return env, nil
}

func (k *Kubelet) envValueFrom(ctx context.Context, pod *corev1.Pod, vf *corev1.EnvVarSource) (string, error) {
	switch {
	case vf.FieldRef != nil:
		return fieldValue(pod, vf.FieldRef.FieldPath), nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if b, ok := s.Data[ref.Key]; ok {
				return string(b), nil
			}
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("secret %q not found", ref.Name)
		}
		return "", fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err == nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, nil
			}
		}
		if ref.Optional != nil && *ref.Optional {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("configmap %q not found", ref.Name)
		}
		return "", fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
	}
	return "", nil // resourceFieldRef and others: not emulated
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

// setEnv sets name in env, in place when it is there.
func setEnv(env []string, name, value string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, name+"=") {
			env[i] = name + "=" + value
			return env
		}
	}
	return append(env, name+"="+value)
}

// capabilities returns the capability set of a container: containerd's default with the spec's additions and
// drops, or every capability when privileged. As containerd's CRI applies them: "ALL" among the additions is every
// capability and "ALL" among the drops none, first; then the named additions, then the named drops (so drop ALL
// with add SYS_PTRACE is SYS_PTRACE alone).
func capabilities(privileged bool, c *corev1.Capabilities) (uint64, error) {
	if privileged {
		return 1<<len(capNames) - 1, nil
	}
	bit := func(name corev1.Capability) (uint64, error) {
		n := strings.TrimPrefix(strings.ToUpper(string(name)), "CAP_")
		if n == "ALL" {
			return 1<<len(capNames) - 1, nil
		}
		for i, cn := range capNames {
			if cn == n {
				return 1 << i, nil
			}
		}
		return 0, fmt.Errorf("unknown capability %q", name)
	}
	var caps uint64
	for _, n := range defaultCaps {
		b, _ := bit(corev1.Capability(n))
		caps |= b
	}
	if c == nil {
		return caps, nil
	}
	isAll := func(n corev1.Capability) bool {
		return strings.EqualFold(strings.TrimPrefix(strings.ToUpper(string(n)), "CAP_"), "ALL")
	}
	if slices.ContainsFunc(c.Add, isAll) {
		caps = 1<<len(capNames) - 1
	}
	if slices.ContainsFunc(c.Drop, isAll) {
		caps = 0
	}
	for _, n := range c.Add {
		if isAll(n) {
			continue
		}
		b, err := bit(n)
		if err != nil {
			return 0, err
		}
		caps |= b
	}
	for _, n := range c.Drop {
		if isAll(n) {
			continue
		}
		b, err := bit(n)
		if err != nil {
			return 0, err
		}
		caps &^= b
	}
	return caps, nil
}

// containerMounts are c's mounts: its volume mounts, the kubelet's /etc/hosts, /etc/hostname, /etc/resolv.conf
// and termination message file, and the tmpfs mounts of AnnotationTmpfs (not for ephemeral containers, which are
// the examiner's).
func containerMounts(pod *corev1.Pod, p *podState, c *container) ([]mountSpec, error) {
	var mounts []mountSpec
	taken := map[string]bool{}
	for _, vm := range c.spec.VolumeMounts {
		v := p.volumes[vm.Name]
		if v == nil {
			return nil, fmt.Errorf("volume %q of mount %s not found in the pod", vm.Name, vm.MountPath)
		}
		m := mountSpec{Target: filepath.Clean(vm.MountPath), Kind: v.kind, Source: v.dir, File: v.file,
			ReadOnly: vm.ReadOnly}
		switch {
		case v.kind == mountCopy && vm.SubPath == "":
			m.Stage, m.ReadOnly = v.dir+".stage", true // secret, configMap, downwardAPI, projected: always read-only
		case v.kind == mountCopy:
			m.Kind, m.Source, m.ReadOnly = mountBind, filepath.Join(v.dir, vm.SubPath), true
		case vm.SubPath != "":
			m.Source = filepath.Join(v.dir, vm.SubPath)
		}
		if strings.Contains(vm.SubPath, "..") {
			return nil, fmt.Errorf("subPath %q of mount %s must not contain '..'", vm.SubPath, vm.MountPath)
		}
		if m.Kind == mountBind && vm.SubPath != "" {
			m.File = !isDir(m.Source)
		}
		m.Recursive = m.Kind == mountBind
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationHostToContainer:
				m.Propagation = "rslave"
			case corev1.MountPropagationBidirectional:
				m.Propagation = "rshared"
			}
		}
		mounts = append(mounts, m)
		taken[m.Target] = true
	}
	termPath := c.spec.TerminationMessagePath
	if termPath == "" {
		termPath = corev1.TerminationMessagePathDefault
	}
	for _, f := range []struct{ target, source string }{
		{"/etc/hosts", filepath.Join(p.dir, "etc-hosts")},
		{"/etc/hostname", filepath.Join(p.dir, "etc-hostname")},
		{"/etc/resolv.conf", filepath.Join(p.dir, "etc-resolv.conf")},
		{termPath, filepath.Join(c.dir, "termination-log")},
	} {
		if !taken[f.target] {
			mounts = append(mounts, mountSpec{Target: f.target, Kind: mountBind, Source: f.source, File: true})
		}
	}
	if v := pod.Annotations[AnnotationTmpfs]; v != "" && !c.ephemeral {
		tmpfs, err := parseTmpfs(v)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, tmpfs...)
	}
	return mounts, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

package fakekubelet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/remotecommand"
)

// execResult is what an exec through the kubelet API returned.
type execResult struct {
	stdout, stderr string
	code           int   // the remote exit code; -1 when err is not an exit
	err            error // a failure that is not an exit code
}

// exec runs argv in container of pod over SPDY, with stdin when not empty.
func (tk *testKubelet) exec(t testing.TB, pod, container, stdin string, argv ...string) execResult {
	t.Helper()
	e, err := remotecommand.NewSPDYExecutor(tk.rest, http.MethodPost,
		tk.url("/exec/default/"+pod+"/"+container, execQuery(stdin != "", false, argv...)))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	opts := remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}
	if stdin != "" {
		opts.Stdin = strings.NewReader(stdin)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	err = e.StreamWithContext(ctx, opts)
	r := execResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr interface{ ExitStatus() int }
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.code = exitErr.ExitStatus()
	default:
		r.code, r.err = -1, err
	}
	return r
}

// mustExec runs argv and fails the test unless it exits 0.
func (tk *testKubelet) mustExec(t testing.TB, pod, container string, argv ...string) string {
	t.Helper()
	r := tk.exec(t, pod, container, "", argv...)
	if r.code != 0 || r.err != nil {
		t.Fatalf("exec %q in %s/%s: exit %d, %v, stdout %q, stderr %q", argv, pod, container, r.code, r.err, r.stdout,
			r.stderr)
	}
	return r.stdout
}

var podSeq int

// runPod creates pod on the test node (UID and namespace filled in) and waits until every container runs.
func (tk *testKubelet) runPod(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	podSeq++
	pod.UID = types.UID(fmt.Sprintf("uid-%s-%d", pod.Name, podSeq))
	pod.Namespace = "default"
	pod.Spec.NodeName = tk.k.NodeName()
	pods := tk.client.CoreV1().Pods("default")
	if _, err := pods.Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	waitFor(t, "pod "+pod.Name+" Running", func() (bool, error) {
		p, err := pods.Get(t.Context(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		if len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
			return false, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running == nil {
				if cs.State.Waiting != nil || cs.State.Terminated != nil {
					return false, fmt.Errorf("container %s: %+v", cs.Name, cs.State)
				}
				return false, nil
			}
		}
		return true, nil
	})
	return got
}

// deletePod deletes pod the way the apiserver does a graceful delete and waits until the kubelet has finished it.
func (tk *testKubelet) deletePod(t *testing.T, name string) {
	t.Helper()
	pods := tk.client.CoreV1().Pods("default")
	p, err := pods.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, new(int64)
	if _, err := pods.Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod "+name+" deleted", func() (bool, error) {
		_, err := pods.Get(t.Context(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), client(err)
	})
}

func sleeper(name, image string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: image,
			Command: []string{"sleep", "3600"}}}}}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// hostPID returns the node PID of a container's process, from the pid file the kubelet writes.
func (tk *testKubelet) hostPID(t *testing.T, pod *corev1.Pod, container string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tk.k.rootDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID),
		"containers", container, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestIsolation: a container sees its own processes, environment, files, hostname and mounts, not the node's nor
// another container's.
func TestIsolation(t *testing.T) {
	marker := "FAKEKUBELET_HOST_SECRET_" + randomHex(t)
	t.Setenv(marker, "leaked") // in the kubelet's own environment: no container may inherit it
	hostFile := filepath.Join(t.TempDir(), "host-only-"+randomHex(t))
	if err := os.WriteFile(hostFile, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	tk := startTestKubelet(t)
	otherMarker := "other-" + randomHex(t)
	other := tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox",
			Command: []string{"sh", "-c", "sleep 3600; : " + otherMarker}}}}})
	pod := tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "target"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"},
				Env: []corev1.EnvVar{{Name: "POD_VAR", Value: "from-the-spec"}}},
			{Name: "sidecar", Image: "busybox", Command: []string{"sleep", "3601"}},
		}}})

	t.Run("processes", func(t *testing.T) {
		// Only PID 1 (the container's command) and the exec's own processes.
		out := tk.mustExec(t, "target", "main", "sh", "-c",
			`for p in /proc/[0-9]*; do printf '%s %s\n' "${p#/proc/}" "$(tr '\0' ' ' < $p/cmdline)"; done`)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], "1 sleep 3600 ") {
			t.Errorf("PID 1 is %q, want the container's command", lines[0])
		}
		for _, l := range lines {
			if strings.Contains(l, otherMarker) || strings.Contains(l, "3601") || strings.Contains(l, ".test") {
				t.Errorf("the container sees another container's or the node's process: %q", l)
			}
		}
		if len(lines) > 5 {
			t.Errorf("the container sees %d processes:\n%s", len(lines), out)
		}
		// The node sees the container's process, under its own PID.
		pid := tk.hostPID(t, pod, "main")
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || string(b) != "sleep\x003600\x00" {
			t.Errorf("node PID %d: cmdline %q, %v", pid, b, err)
		}
		_ = other
	})

	t.Run("environment", func(t *testing.T) {
		out := tk.mustExec(t, "target", "main", "sh", "-c", `cat /proc/1/environ | tr '\0' '\n'; echo ---; env`)
		if strings.Contains(out, marker) {
			t.Fatalf("the node's environment leaked into the container:\n%s", out)
		}
		for _, want := range []string{"POD_VAR=from-the-spec", "HOSTNAME=target", "PATH=/usr/local/sbin:", "HOME=/root"} {
			if !strings.Contains(out, want) {
				t.Errorf("environment lacks %s:\n%s", want, out)
			}
		}
	})

	t.Run("files", func(t *testing.T) {
		r := tk.exec(t, "target", "main", "", "cat", hostFile)
		if r.code == 0 || !strings.Contains(r.stderr, "No such file or directory") {
			t.Errorf("cat %s (a node file) in the container: exit %d, %q %q, %v", hostFile, r.code, r.stdout, r.stderr, r.err)
		}
		if out := tk.mustExec(t, "target", "main", "sh", "-c", "readlink /proc/1/root; ls /proc/1/root/bin/busybox; "+
			"cat /proc/1/root/etc/hostname; hostname"); out != "/\n/proc/1/root/bin/busybox\ntarget\ntarget\n" {
			t.Errorf("/proc/1/root in the container: %q", out)
		}
		// A write in one container is not in another's root, nor in the image.
		tk.mustExec(t, "target", "main", "sh", "-c", "echo mine > /written-by-main")
		if r := tk.exec(t, "target", "sidecar", "", "cat", "/written-by-main"); r.code == 0 {
			t.Errorf("the sidecar sees the main container's file: %q", r.stdout)
		}
		dir, _ := CacheImageDir()
		if _, err := os.Stat(filepath.Join(dir, "busybox", "rootfs", "written-by-main")); !os.IsNotExist(err) {
			t.Errorf("the write reached the image: %v", err)
		}
		// The node reaches the container's files through its process, as a collector on the node would.
		pid := tk.hostPID(t, pod, "main")
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/written-by-main", pid)); err != nil || string(b) != "mine\n" {
			t.Errorf("/proc/%d/root/written-by-main on the node: %q, %v", pid, b, err)
		}
	})

	t.Run("mounts", func(t *testing.T) {
		out := tk.mustExec(t, "target", "main", "cat", "/proc/self/mountinfo")
		if !regexp.MustCompile(`(?m)^\S+ \S+ \S+ / / rw,\S+ - overlay overlay rw,lowerdir=`).MatchString(out) {
			t.Errorf("the root is not an overlay:\n%s", out)
		}
		if strings.Contains(out, " /work ") || strings.Contains(out, "/mnt/") {
			t.Errorf("the node's mounts are in the container's:\n%s", out)
		}
		for _, want := range []string{" /proc rw,nosuid,nodev,noexec", " /dev/pts ", " /dev/shm ", " /sys ro,",
			" /etc/hosts ", " /etc/resolv.conf ", " /dev/termination-log ", " /proc/keys ", " /proc/sys ro,"} {
			if !strings.Contains(out, want) {
				t.Errorf("no mount %q in the container:\n%s", want, out)
			}
		}
		caps := tk.mustExec(t, "target", "main", "sh", "-c", "grep -E '^Cap(Eff|Bnd|Inh)' /proc/self/status")
		if want := "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"; caps != want {
			t.Errorf("capabilities %q, want containerd's default set %q", caps, want)
		}
	})
}

// TestMounts: what a pod asks for — a read-only or noexec /tmp, a read-only root, a user — is what its processes get.
func TestMounts(t *testing.T) {
	tk := startTestKubelet(t)
	yes, uid, gid := true, int64(1000), int64(3000)
	tk.runPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "noexec", Annotations: map[string]string{AnnotationTmpfs: "/tmp:noexec /data:ro,size=1m"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"}}}}})
	tk.runPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "readonly"},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &gid, SupplementalGroups: []int64{4000}},
			Volumes:         []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"},
				SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes},
				VolumeMounts:    []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp", ReadOnly: true}}}}}})

	t.Run("noexec /tmp refuses exec", func(t *testing.T) {
		tk.mustExec(t, "noexec", "main", "sh", "-c", "cp /bin/busybox /tmp/bb && chmod 755 /tmp/bb")
		r := tk.exec(t, "noexec", "main", "", "sh", "-c", "/tmp/bb true")
		if r.code != 126 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("running a program from /tmp: exit %d, stderr %q; want 126, Permission denied", r.code, r.stderr)
		}
		// exec of it directly fails as runc reports it.
		r = tk.exec(t, "noexec", "main", "", "/tmp/bb", "true")
		if r.err == nil || !strings.Contains(r.err.Error(), `exec failed: unable to start container process: exec: "/tmp/bb": permission denied: unknown`) {
			t.Errorf("exec /tmp/bb: %+v", r)
		}
		if out := tk.mustExec(t, "noexec", "main", "sh", "-c", "grep -E ' /(tmp|data) ' /proc/self/mountinfo"); !strings.Contains(out, " /tmp rw,nosuid,nodev,noexec") ||
			!strings.Contains(out, " /data ro,nosuid,nodev") {
			t.Errorf("tmpfs mounts:\n%s", out)
		}
		if r := tk.exec(t, "noexec", "main", "", "touch", "/data/x"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
			t.Errorf("touch /data/x: %+v", r)
		}
	})
	t.Run("read-only /tmp and root refuse writes", func(t *testing.T) {
		for _, path := range []string{"/tmp/x", "/x", "/etc/x"} {
			r := tk.exec(t, "readonly", "main", "", "touch", path)
			if r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
				t.Errorf("touch %s: exit %d, stderr %q; want Read-only file system", path, r.code, r.stderr)
			}
		}
		if out := tk.mustExec(t, "readonly", "main", "sh", "-c", "echo ok > /dev/shm/x && cat /dev/shm/x"); out != "ok\n" {
			t.Errorf("/dev/shm: %q", out)
		}
	})
	t.Run("user and groups", func(t *testing.T) {
		if out := tk.mustExec(t, "readonly", "main", "sh", "-c", "id -u; id -g; id -G; grep -E '^(Uid|CapEff)' /proc/1/status"); out != "1000\n3000\n3000 4000\n"+
			"Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n" {
			t.Errorf("id: %q", out)
		}
	})
	t.Run("runAsNonRoot refuses a root container", func(t *testing.T) {
		pods := tk.client.CoreV1().Pods("default")
		p := sleeper("nonroot", "busybox")
		p.Namespace, p.UID, p.Spec.NodeName = "default", "uid-nonroot", tk.k.NodeName()
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsNonRoot: &yes}
		if _, err := pods.Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want := `container has runAsNonRoot and image will run as root (pod: "nonroot_default(uid-nonroot)", container: main)`
		waitFor(t, "CreateContainerConfigError", func() (bool, error) {
			got, err := pods.Get(t.Context(), "nonroot", metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 {
				return false, err
			}
			w := got.Status.ContainerStatuses[0].State.Waiting
			if w == nil {
				return false, fmt.Errorf("state %+v", got.Status.ContainerStatuses[0].State)
			}
			if w.Reason != "CreateContainerConfigError" || w.Message != want || got.Status.Phase != corev1.PodPending {
				return false, fmt.Errorf("phase %s, waiting %+v; want CreateContainerConfigError %q", got.Status.Phase, w, want)
			}
			return true, nil
		})
	})
}

// execNotFound is the message the kubelet passes on from containerd and runc when the program is not in the
// container, its exec ID being 64 hex digits.
func execNotFound(program string) *regexp.Regexp {
	return regexp.MustCompile(`^Internal error occurred: error executing command in container: failed to exec in ` +
		`container: failed to start exec "[0-9a-f]{64}": OCI runtime exec failed: exec failed: unable to start ` +
		`container process: exec: "` + regexp.QuoteMeta(program) + `": executable file not found in \$PATH: unknown$`)
}

// TestImages: each image has what it promises and lacks what it must.
func TestImages(t *testing.T) {
	tk := startTestKubelet(t)
	for _, name := range []string{"busybox", "notools", "debian"} {
		image := map[string]string{"notools": "warren.test/busybox-notools:1", "debian": "debian:bookworm-slim"}[name]
		if image == "" {
			image = name
		}
		tk.runPod(t, sleeper(name, image))
	}
	tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "distroless"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "gcr.io/example/distroless@sha256:" +
			strings.Repeat("ab", 32), Args: []string{"-write", "/var/lib/app/key=planted"}}}}})

	t.Run("busybox", func(t *testing.T) {
		if out := tk.mustExec(t, "busybox", "main", "sh", "-c", "echo hi | sha256sum; command -v tar"); out != "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4  -\n/bin/tar\n" {
			t.Errorf("busybox: %q", out)
		}
	})
	t.Run("busybox-notools has sh, cat and chmod, no tar nor hashing tool", func(t *testing.T) {
		out := tk.mustExec(t, "notools", "main", "sh", "-c", "echo data > /tmp/f; chmod 600 /tmp/f; cat /tmp/f; ls -l /tmp/f; "+
			"for c in tar cpio md5sum sha1sum sha256sum sha512sum sha3sum cksum busybox; do command -v $c; done; echo end")
		if !strings.HasPrefix(out, "data\n-rw-------") || !strings.HasSuffix(out, "\nend\n") || strings.Count(out, "\n") != 3 {
			t.Errorf("busybox-notools: %q", out)
		}
		for _, prog := range []string{"tar", "sha256sum"} {
			r := tk.exec(t, "notools", "main", "", prog, "--help")
			if r.err == nil || !execNotFound(prog).MatchString(r.err.Error()) {
				t.Errorf("exec %s: %+v; want %s", prog, r, execNotFound(prog))
			}
		}
	})
	t.Run("debian", func(t *testing.T) {
		if out := tk.mustExec(t, "debian", "main", "sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME; for c in tar sha256sum bash; do command -v $c; done"); out != "bookworm\n/usr/bin/tar\n/usr/bin/sha256sum\n/usr/bin/bash\n" {
			t.Errorf("debian: %q", out)
		}
	})
	t.Run("distroless has no shell", func(t *testing.T) {
		for _, prog := range []string{"sh", "/bin/sh"} {
			r := tk.exec(t, "distroless", "main", "", prog, "-c", "true")
			want := execNotFound(prog)
			if prog == "/bin/sh" {
				want = regexp.MustCompile(`exec failed: unable to start container process: exec: "/bin/sh": stat /bin/sh: no such file or directory: unknown$`)
			}
			if r.err == nil || !want.MatchString(r.err.Error()) {
				t.Errorf("exec %s: %+v; want %s", prog, r, want)
			}
		}
		// Its application planted a file, reachable through its process from the node.
		pods := tk.client.CoreV1().Pods("default")
		p, err := pods.Get(t.Context(), "distroless", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		planted := fmt.Sprintf("/proc/%d/root/var/lib/app/key", tk.hostPID(t, p, "main"))
		waitFor(t, "the planted file", func() (bool, error) {
			b, err := os.ReadFile(planted)
			return string(b) == "planted", client(err)
		})
		st := p.Status.ContainerStatuses[0]
		if st.Image != "gcr.io/example/distroless@sha256:"+strings.Repeat("ab", 32) ||
			!regexp.MustCompile(`^gcr\.io/example/distroless@sha256:[0-9a-f]{64}$`).MatchString(st.ImageID) ||
			!regexp.MustCompile(`^fakekubelet://[0-9a-f]{64}$`).MatchString(st.ContainerID) {
			t.Errorf("status: image %q, imageID %q, containerID %q", st.Image, st.ImageID, st.ContainerID)
		}
	})
	t.Run("an unknown image is ErrImagePull", func(t *testing.T) {
		pods := tk.client.CoreV1().Pods("default")
		p := sleeper("unknown", "alpine:3")
		p.Namespace, p.UID, p.Spec.NodeName = "default", "uid-unknown", tk.k.NodeName()
		if _, err := pods.Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ErrImagePull", func() (bool, error) {
			got, err := pods.Get(t.Context(), "unknown", metav1.GetOptions{})
			if err != nil || len(got.Status.ContainerStatuses) == 0 {
				return false, err
			}
			w := got.Status.ContainerStatuses[0].State.Waiting
			return w != nil && w.Reason == "ErrImagePull" && strings.Contains(w.Message, `image "alpine:3" (alpine) not found`) &&
				got.Status.Phase == corev1.PodPending, nil
		})
	})
}

// TestSecretVolumes: the service account token and Secret volumes are mounted as the kubelet mounts them (a
// read-only tmpfs in the atomic writer's layout), for a collector to list and not copy.
func TestSecretVolumes(t *testing.T) {
	tk := startTestKubelet(t)
	if _, err := tk.client.CoreV1().Secrets("default").Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"},
		Data:       map[string][]byte{"password": []byte("hunter2")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expiry := int64(3607)
	tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "secrets"}, Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "db", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}}},
			// As the ServiceAccount admission plugin adds it.
			{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: &expiry, Path: "token"}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace",
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			}}}},
		},
		Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "db", MountPath: "/etc/db"},
				{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}}}}})

	out := tk.mustExec(t, "secrets", "main", "sh", "-c", "cd /var/run/secrets/kubernetes.io/serviceaccount && ls -A && "+
		"cat namespace; echo; readlink token; cat /etc/db/password; echo; grep -E ' /(etc/db|var/run/secrets/kubernetes.io/serviceaccount) ' /proc/self/mountinfo")
	lines := strings.Split(out, "\n")
	if len(lines) < 9 || !regexp.MustCompile(`^\.\.2\d{3}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$`).MatchString(lines[0]) ||
		strings.Join(lines[1:7], "\n") != "..data\nca.crt\nnamespace\ntoken\ndefault\n..data/token" || lines[7] != "hunter2" {
		t.Fatalf("volumes:\n%s", out)
	}
	for _, l := range lines[8:10] {
		if !regexp.MustCompile(` ro,\S+ - tmpfs tmpfs `).MatchString(l) {
			t.Errorf("mount %q: want a read-only tmpfs", l)
		}
	}
	if r := tk.exec(t, "secrets", "main", "", "sh", "-c", "echo x > /etc/db/new"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("write into a secret volume: %+v", r)
	}
}

// TestCleanup: a deleted pod leaves no process, mount namespace, mount or directory behind.
func TestCleanup(t *testing.T) {
	tk := startTestKubelet(t)
	mountsBefore := hostMounts(t, tk.k.rootDir)
	pod := tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gone"}, Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sh", "-c", "sleep 3600 & sleep 3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}}}}})
	pid := tk.hostPID(t, pod, "main")
	mntNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		t.Fatal(err)
	}
	pidNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	// An exec still running when the pod goes.
	execDone := make(chan execResult, 1)
	go func() { execDone <- tk.exec(t, "gone", "main", "", "sleep", "3600") }()
	waitFor(t, "the exec's process", func() (bool, error) { return len(procsIn(pidNS)) == 3, nil })
	if m := hostMounts(t, tk.k.rootDir); m != mountsBefore {
		t.Errorf("the node's mount table changed while the pod runs:\nbefore:\n%s\nafter:\n%s", mountsBefore, m)
	}
	podDir := filepath.Join(tk.k.rootDir, "pods", "default_gone_"+string(pod.UID))

	tk.deletePod(t, "gone")
	select {
	case r := <-execDone:
		if r.code != 137 && r.err == nil {
			t.Errorf("the exec ended with %+v", r)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the exec did not end with its pod")
	}
	waitFor(t, "no process in the pod's namespaces", func() (bool, error) {
		return len(procsIn(pidNS)) == 0 && len(procsIn(mntNS)) == 0, nil
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d: %v, want ESRCH", pid, err)
	}
	if m := hostMounts(t, tk.k.rootDir); m != mountsBefore {
		t.Errorf("mounts left on the node:\nbefore:\n%s\nafter:\n%s", mountsBefore, m)
	}
	if _, err := os.Stat(podDir); !os.IsNotExist(err) {
		t.Errorf("pod directory %s: %v, want it removed", podDir, err)
	}

	// A pod still running when the kubelet stops goes with it.
	left := tk.runPod(t, sleeper("left", "busybox"))
	pid = tk.hostPID(t, left, "main")
	pidNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	mntNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	tk.stop()
	if n := len(procsIn(pidNS)) + len(procsIn(mntNS)); n != 0 {
		t.Errorf("%d processes left in the namespaces of a pod after the kubelet stopped", n)
	}
	if m := hostMounts(t, tk.k.rootDir); m != mountsBefore {
		t.Errorf("mounts left on the node after the kubelet stopped:\n%s", m)
	}
	if _, err := os.Stat(filepath.Join(tk.k.rootDir, "pods", "default_left_"+string(left.UID))); !os.IsNotExist(err) {
		t.Errorf("pod directory after the kubelet stopped: %v, want it removed", err)
	}
}

// hostMounts is the node's mount table, mount IDs dropped, except the mounts of other processes of this machine
// (tests of other packages run containers too): only mount points outside every other process's temporary
// directory count, that is outside /tmp unless under the kubelet's own root directory.
func hostMounts(t *testing.T, kubeletRoot string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	tmp := os.TempDir() + string(filepath.Separator)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if point := f[4]; strings.HasPrefix(point, tmp) && !strings.HasPrefix(point, kubeletRoot+string(filepath.Separator)) {
			continue
		}
		lines = append(lines, strings.Join(f[2:], " "))
	}
	return strings.Join(lines, "\n")
}

// procsIn returns the node PIDs of the processes in namespace ns (a /proc/PID/ns/* link target).
func procsIn(ns string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	kind := ns[:strings.Index(ns, ":")]
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind)); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestEphemeralContainer: an ephemeral container with targetContainerName shares its target's PID namespace, so a
// shell-less target's files are reachable through /proc/PID/root; its output is its log and reaches attach.
func TestEphemeralContainer(t *testing.T) {
	tk := startTestKubelet(t)
	uid := int64(65532)
	tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{
		SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
		Containers: []corev1.Container{{Name: "app", Image: "distroless",
			Args: []string{"-write", "/tmp/evidence=planted"}}}}})
	pods := tk.client.CoreV1().Pods("default")
	p, err := pods.Get(t.Context(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
		TargetContainerName: "app",
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox", Stdin: true,
			SecurityContext: &corev1.SecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			// Waits for a line on stdin before it writes, as a collector waits for its acquirer.
			Command: []string{"sh", "-c", `read go; echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"; ` +
				`cat /proc/1/root/tmp/evidence; echo; ls /proc/1/root/bin 2>&1; id -u`}}})
	if _, err := pods.Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ephemeral container running", func() (bool, error) {
		p, err := pods.Get(t.Context(), "app", metav1.GetOptions{})
		if err != nil || len(p.Status.EphemeralContainerStatuses) == 0 {
			return false, err
		}
		st := p.Status.EphemeralContainerStatuses[0]
		return st.Name == "debugger" && st.State.Running != nil && !st.Ready, nil
	})

	e, err := remotecommand.NewSPDYExecutor(tk.rest, http.MethodPost, tk.url("/attach/default/app/debugger",
		url.Values{"input": {"1"}, "output": {"1"}, "error": {"1"}}))
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	want := "pid1=/app -write /tmp/evidence=planted \nplanted\nls: /proc/1/root/bin: No such file or directory\n65532\n"
	if err := e.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdin: strings.NewReader("go\n"),
		Stdout: &stdout, Stderr: io.Discard}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	if stdout.String() != want {
		t.Errorf("attach output %q, want %q", stdout.String(), want)
	}
	waitFor(t, "the ephemeral container terminated", func() (bool, error) {
		p, err := pods.Get(t.Context(), "app", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		term := p.Status.EphemeralContainerStatuses[0].State.Terminated
		return term != nil && term.ExitCode == 0 && p.Status.Phase == corev1.PodRunning, nil
	})
	resp, err := tk.http.Get(tk.base + "/containerLogs/default/app/debugger")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != want {
		t.Errorf("the ephemeral container's log: %q, want %q", b, want)
	}
}

// TestHostPIDAndHostPath: a pod with hostPID sees the node's processes; a read-only hostPath mount shows the node's
// files and refuses writes, as node-level collection needs.
func TestHostPIDAndHostPath(t *testing.T) {
	tk := startTestKubelet(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "meta.db"), []byte("node data"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirType := corev1.HostPathDirectory
	tk.runPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "node"}, Spec: corev1.PodSpec{
		HostPID:     true,
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Volumes: []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirType}}}},
		Containers: []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"sleep", "3600"},
			VolumeMounts: []corev1.VolumeMount{{Name: "state", MountPath: "/host/state", ReadOnly: true}}}}}})
	self := strconv.Itoa(os.Getpid())
	out := tk.mustExec(t, "node", "main", "sh", "-c", "cat /proc/"+self+"/cmdline | tr '\\0' ' '; echo; cat /host/state/meta.db")
	if !strings.Contains(out, ".test") || !strings.HasSuffix(out, "\nnode data") {
		t.Errorf("hostPID and hostPath: %q", out)
	}
	if r := tk.exec(t, "node", "main", "", "touch", "/host/state/x"); r.code == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("write into a read-only hostPath: %+v", r)
	}
}

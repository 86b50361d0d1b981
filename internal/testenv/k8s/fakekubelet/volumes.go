package fakekubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationTmpfs asks for empty tmpfs mounts in every (non-ephemeral) container of a pod, as Docker's --tmpfs
// does: a space-separated list of PATH[:OPTIONS], OPTIONS being comma-separated ro, rw, noexec, exec, nosuid, suid,
// nodev, dev, size=N and mode=OCTAL. "/tmp:noexec" is a /tmp that refuses exec, "/tmp:ro" one that refuses writes.
// (A read-only /tmp also comes the Kubernetes way: an emptyDir volume mounted readOnly at /tmp; and a read-only root
// with securityContext.readOnlyRootFilesystem.)
const AnnotationTmpfs = "fakekubelet.warren.dev/tmpfs"

// podVolume is a pod volume prepared on the node.
type podVolume struct {
	kind string // mountBind (emptyDir, hostPath) or mountCopy (secret, configMap, projected, downwardAPI)
	dir  string // the node path: the directory (or file, for a hostPath file) bound or copied
	file bool
}

// prepareVolumes makes the pod's volumes under dir: emptyDir directories, hostPath paths (created for the
// ...OrCreate types), and for secret, configMap, projected and downwardAPI volumes the files the kubelet would write,
// in its atomic writer's layout (..data -> ..TIMESTAMP/, each name a link into ..data). Secret and ConfigMap contents
// come from the API objects; a missing one gives placeholder files for the keys the volume names (nothing when it is
// optional), where the real kubelet would wait for it. A service account token is requested from the API
// (TokenRequest, bound to the pod), and is a placeholder when that fails.
func (k *Kubelet) prepareVolumes(ctx context.Context, pod *corev1.Pod, dir string) (map[string]*podVolume, error) {
	vols := map[string]*podVolume{}
	for _, v := range pod.Spec.Volumes {
		vdir := filepath.Join(dir, "volumes", v.Name)
		pv := &podVolume{kind: mountCopy, dir: vdir}
		var files map[string]volumeFile
		var err error
		switch {
		case v.EmptyDir != nil:
			pv.kind = mountBind
			if err = os.MkdirAll(vdir, 0o777); err == nil {
				err = os.Chmod(vdir, 0o777) // as the kubelet makes them, past the umask
			}
		case v.HostPath != nil:
			pv.kind, pv.dir = mountBind, v.HostPath.Path
			pv.file, err = prepareHostPath(v.HostPath)
		case v.Secret != nil:
			files, err = k.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional,
				v.Secret.DefaultMode)
		case v.ConfigMap != nil:
			files, err = k.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional,
				v.ConfigMap.DefaultMode)
		case v.DownwardAPI != nil:
			files = downwardFiles(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			files, err = k.projectedFiles(ctx, pod, v.Projected)
		default:
			err = fmt.Errorf("volume %s: only emptyDir, hostPath, secret, configMap, downwardAPI and projected "+
				"volumes are emulated", v.Name)
		}
		if err == nil && pv.kind == mountCopy {
			err = writeAtomic(vdir, files)
			if err == nil {
				err = os.MkdirAll(vdir+".stage", 0o755) // where each container's init fills its tmpfs
			}
		}
		if err != nil {
			return nil, fmt.Errorf("failed to prepare volume %s: %w", v.Name, err)
		}
		vols[v.Name] = pv
	}
	return vols, nil
}

// prepareHostPath checks or creates a hostPath volume's path as its type says and reports whether it is a file.
func prepareHostPath(h *corev1.HostPathVolumeSource) (bool, error) {
	typ := corev1.HostPathUnset
	if h.Type != nil {
		typ = *h.Type
	}
	switch typ {
	case corev1.HostPathDirectoryOrCreate:
		if err := os.MkdirAll(h.Path, 0o755); err != nil {
			return false, err
		}
	case corev1.HostPathFileOrCreate:
		f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return false, err
		}
		f.Close()
	}
	fi, err := os.Stat(h.Path)
	if err != nil {
		return false, fmt.Errorf("hostPath %s: %w", h.Path, err)
	}
	switch {
	case (typ == corev1.HostPathDirectory || typ == corev1.HostPathDirectoryOrCreate) && !fi.IsDir():
		return false, fmt.Errorf("hostPath type check failed: %s is not a directory", h.Path)
	case (typ == corev1.HostPathFile || typ == corev1.HostPathFileOrCreate) && !fi.Mode().IsRegular():
		return false, fmt.Errorf("hostPath type check failed: %s is not a file", h.Path)
	}
	return !fi.IsDir(), nil
}

// volumeFile is one file of a secret, configMap, downwardAPI or projected volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

func fileMode(itemMode, defaultMode *int32) os.FileMode {
	switch {
	case itemMode != nil:
		return os.FileMode(*itemMode)
	case defaultMode != nil:
		return os.FileMode(*defaultMode)
	}
	return 0o644
}

// keyFiles maps data to files: every key, or only the items (key -> path) when there are some.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, placeholder func(key string) []byte) map[string]volumeFile {
	files := map[string]volumeFile{}
	if len(items) == 0 {
		for key, b := range data {
			files[key] = volumeFile{b, fileMode(nil, defaultMode)}
		}
		return files
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok && placeholder != nil {
			b = placeholder(it.Key)
		}
		files[it.Path] = volumeFile{b, fileMode(it.Mode, defaultMode)}
	}
	return files
}

func (k *Kubelet) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool,
	defaultMode *int32) (map[string]volumeFile, error) {
	s, err := k.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return keyFiles(s.Data, items, defaultMode, nil), nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("failed to get Secret %s/%s: %w", ns, name, err)
	case optional != nil && *optional:
		return nil, nil
	}
	return keyFiles(nil, items, defaultMode, func(key string) []byte {
		return fmt.Appendf(nil, "fakekubelet: placeholder for key %s of Secret %s/%s, which does not exist\n", key, ns, name)
	}), nil
}

func (k *Kubelet) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool,
	defaultMode *int32) (map[string]volumeFile, error) {
	cm, err := k.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		data := map[string][]byte{}
		for key, v := range cm.Data {
			data[key] = []byte(v)
		}
		for key, v := range cm.BinaryData {
			data[key] = v
		}
		return keyFiles(data, items, defaultMode, nil), nil
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("failed to get ConfigMap %s/%s: %w", ns, name, err)
	case optional != nil && *optional:
		return nil, nil
	}
	// kube-root-ca.crt is published by the controller-manager, which a test cluster does not run.
	return keyFiles(nil, items, defaultMode, func(key string) []byte {
		return fmt.Appendf(nil, "fakekubelet: placeholder for key %s of ConfigMap %s/%s, which does not exist\n", key, ns, name)
	}), nil
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, defaultMode *int32) map[string]volumeFile {
	files := map[string]volumeFile{}
	for _, it := range items {
		var v string
		if it.FieldRef != nil {
			v = fieldValue(pod, it.FieldRef.FieldPath)
		}
		files[it.Path] = volumeFile{[]byte(v), fileMode(it.Mode, defaultMode)}
	}
	return files
}

func (k *Kubelet) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) (map[string]volumeFile, error) {
	files := map[string]volumeFile{}
	add := func(m map[string]volumeFile, err error) error {
		for path, f := range m {
			files[path] = f
		}
		return err
	}
	for _, src := range p.Sources {
		var err error
		switch {
		case src.Secret != nil:
			err = add(k.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional, p.DefaultMode))
		case src.ConfigMap != nil:
			err = add(k.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional,
				p.DefaultMode))
		case src.DownwardAPI != nil:
			err = add(downwardFiles(pod, src.DownwardAPI.Items, p.DefaultMode), nil)
		case src.ServiceAccountToken != nil:
			files[src.ServiceAccountToken.Path] = volumeFile{k.serviceAccountToken(ctx, pod, src.ServiceAccountToken),
				fileMode(nil, p.DefaultMode)}
		}
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// serviceAccountToken asks the API server for a token of the pod's service account, bound to the pod, as the kubelet
// does; a placeholder when that fails (a fake clientset, a missing account).
func (k *Kubelet) serviceAccountToken(ctx context.Context, pod *corev1.Pod, s *corev1.ServiceAccountTokenProjection) []byte {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: s.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if s.Audience != "" {
		req.Spec.Audiences = []string{s.Audience}
	}
	tr, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err == nil && tr.Status.Token != "" {
		return []byte(tr.Status.Token)
	}
	k.log.Debug("no service account token from the API; writing a placeholder", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	return fmt.Appendf(nil, "fakekubelet-placeholder-token-for-%s-%s", pod.Namespace, sa)
}

// writeAtomic writes files into dir in the layout of the kubelet's atomic writer: the files in ..TIMESTAMP/, the
// link ..data to it, and for each top-level name a link NAME -> ..data/NAME.
func writeAtomic(dir string, files map[string]volumeFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	top := map[string]bool{}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		clean := filepath.Clean(p)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("bad path %q in a volume", p)
		}
		f := files[p]
		dst := filepath.Join(ts, clean)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(dst, f.mode); err != nil {
			return err
		}
		top[strings.Split(clean, "/")[0]] = true
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for name := range top {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// fieldValue is the value of a downward API field path of pod.
func fieldValue(pod *corev1.Pod, path string) string {
	switch path {
	case "metadata.name":
		return pod.Name
	case "metadata.namespace":
		return pod.Namespace
	case "metadata.uid":
		return string(pod.UID)
	case "spec.nodeName":
		return pod.Spec.NodeName
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName
	case "status.podIP", "status.hostIP":
		return "127.0.0.1"
	case "metadata.labels", "metadata.annotations":
		m := pod.Labels
		if path == "metadata.annotations" {
			m = pod.Annotations
		}
		keys := make([]string, 0, len(m))
		for key := range m {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, key := range keys {
			fmt.Fprintf(&b, "%s=%q\n", key, m[key])
		}
		return b.String()
	}
	return ""
}

// parseTmpfs parses the AnnotationTmpfs value into mounts.
func parseTmpfs(v string) ([]mountSpec, error) {
	var mounts []mountSpec
	for _, f := range strings.Fields(v) {
		path, opts, _ := strings.Cut(f, ":")
		if !filepath.IsAbs(path) {
			return nil, fmt.Errorf("annotation %s: %q is not an absolute path", AnnotationTmpfs, path)
		}
		m := mountSpec{Target: filepath.Clean(path), Kind: mountTmpfs, NoSuid: true, NoDev: true}
		var data []string
		for _, o := range strings.Split(opts, ",") {
			switch {
			case o == "":
			case o == "ro":
				m.ReadOnly = true
			case o == "rw":
				m.ReadOnly = false
			case o == "noexec":
				m.NoExec = true
			case o == "exec":
				m.NoExec = false
			case o == "nosuid":
				m.NoSuid = true
			case o == "suid":
				m.NoSuid = false
			case o == "nodev":
				m.NoDev = true
			case o == "dev":
				m.NoDev = false
			case strings.HasPrefix(o, "size=") || strings.HasPrefix(o, "mode="):
				data = append(data, o)
			default:
				return nil, fmt.Errorf("annotation %s: unknown option %q for %s (want ro, rw, noexec, exec, nosuid, "+
					"suid, nodev, dev, size=N or mode=OCTAL)", AnnotationTmpfs, o, path)
			}
		}
		if len(data) == 0 {
			data = []string{"mode=1777"}
		}
		m.Data = strings.Join(data, ",")
		mounts = append(mounts, m)
	}
	return mounts, nil
}

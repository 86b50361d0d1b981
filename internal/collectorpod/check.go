package collectorpod

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"

	"github.com/warren-dev/warren/collector"
)

// MaxBody bounds the body of a pod creation the connector reads to check (warren's pod is about 3 KiB).
const MaxBody = 64 << 10

// MaxActiveDeadline bounds the pod's life a request may ask for.
const MaxActiveDeadline = 24 * 3600

// Allowed is what a ceiling's podSpec rule allows: the collector images (each pinned by digest) and the host
// directories the pod may mount (containerd's runtime directories and roots; default DefaultHostPaths).
type Allowed struct {
	Images    []string
	HostPaths []string
}

// DefaultHostPaths are containerd's runtime directories and roots as containerd, k3s and RKE2 lay them out
// (Bottlerocket's host containerd uses containerd's own).
var DefaultHostPaths = []string{
	collector.DefaultRuntimeDir, collector.DefaultContainerdRoot,
	"/run/k3s/containerd/io.containerd.runtime.v2.task", "/var/lib/rancher/k3s/agent/containerd", "/var/lib/rancher/rke2/agent/containerd",
}

// digestRef is an image reference pinned by digest: NAME@sha256:<64 hex>.
var digestRef = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*@sha256:[a-f0-9]{64}$`)

// ValidImage reports whether ref is an image reference pinned by a sha256 digest.
func ValidImage(ref string) bool { return len(ref) <= 512 && digestRef.MatchString(ref) }

// CheckError is a refusal of a body: Code is the HTTP status (400, 413, 415 or 403).
type CheckError struct {
	Code    int
	Message string
}

func (e *CheckError) Error() string { return e.Message }

func refuse(code int, format string, args ...any) *CheckError {
	return &CheckError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CheckRequestBody checks the media type and encoding of a body the connector is to read.
func CheckRequestBody(h http.Header) *CheckError {
	ct := h.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return refuse(http.StatusUnsupportedMediaType, "the pod must be sent as application/json to be checked, not %q", clip(ct))
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return refuse(http.StatusUnsupportedMediaType, "the pod must be sent as application/json to be checked, not %q", clip(ct))
		}
	}
	if len(h.Values("Content-Type")) > 1 {
		return refuse(http.StatusUnsupportedMediaType, "the pod's request has several Content-Type headers")
	}
	if enc := h.Values("Content-Encoding"); len(enc) > 1 || (len(enc) == 1 && !strings.EqualFold(enc[0], "identity")) {
		return refuse(http.StatusUnsupportedMediaType, "the pod must be sent without a Content-Encoding to be checked, not %q", clip(strings.Join(enc, ",")))
	}
	return nil
}

// CheckNodePod checks that body (a pod creation in namespace) is exactly warren's node collector pod (NodePod) with
// an allowed image and allowed host directories: decoded strictly (no unknown or duplicate fields, names matched
// case-sensitively, as the API server decodes), it must equal the pod NodePod builds from the values a request may
// choose (name, node, image, the collector's arguments, tolerations, the target's annotations, the deadline).
// Every refusal says what differs. It returns the pod's parameters.
func CheckNodePod(body []byte, namespace string, a Allowed) (*NodeParams, *CheckError) {
	if len(body) > MaxBody {
		return nil, refuse(http.StatusRequestEntityTooLarge, "the pod is larger than %d bytes; warren's collector pod is about 3 KiB", MaxBody)
	}
	if !utf8.Valid(body) {
		return nil, refuse(http.StatusBadRequest, "the pod is not valid UTF-8")
	}
	var pod corev1.Pod
	strict, err := kjson.UnmarshalStrict(body, &pod)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "the pod is not valid JSON: %s", clip(err.Error()))
	}
	if len(strict) > 0 {
		var msgs []string
		for _, e := range strict {
			msgs = append(msgs, e.Error())
		}
		return nil, refuse(http.StatusBadRequest, "the pod is not strict JSON: %s", clip(strings.Join(msgs, "; ")))
	}
	deny := func(format string, args ...any) (*NodeParams, *CheckError) {
		return nil, refuse(http.StatusForbidden, "not warren's collector pod: "+format, args...)
	}
	if pod.APIVersion != "v1" || pod.Kind != "Pod" {
		return deny("apiVersion %q kind %q, want v1 Pod", clip(pod.APIVersion), clip(pod.Kind))
	}
	if pod.Namespace != "" && pod.Namespace != namespace {
		return deny("metadata.namespace %q in a request to namespace %q", clip(pod.Namespace), namespace)
	}
	if pod.Name == "" {
		return deny("metadata.name is empty (generateName is not allowed)")
	}
	if n := len(pod.Spec.Containers); n != 1 {
		return deny("%d containers; it has one", n)
	}
	c := pod.Spec.Containers[0]
	if !ValidImage(c.Image) || !slices.Contains(a.Images, c.Image) {
		return deny("image %q is not one of the collector images the cluster's policy allows (%s)", clip(c.Image), strings.Join(a.Images, ", "))
	}
	if len(c.Args) == 0 || c.Args[0] != collector.ModeNode {
		return deny("the collector's arguments do not start with %q", collector.ModeNode)
	}
	args, err := collector.ParseModeArgs(c.Args)
	if err != nil {
		return deny("the collector's arguments: %s", clip(err.Error()))
	}
	hostPaths := a.HostPaths
	if len(hostPaths) == 0 {
		hostPaths = DefaultHostPaths
	}
	for _, d := range []string{args.RuntimeDir, args.ContainerdRoot} {
		if !slices.Contains(hostPaths, d) {
			return deny("host directory %q is not one the cluster's policy allows (%s)", clip(d), strings.Join(hostPaths, ", "))
		}
	}
	if args.RuntimeDir == args.ContainerdRoot {
		return deny("the runtime directory and containerd's root are the same directory")
	}
	var deadline int64
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
		deadline = *d
	}
	if deadline <= 0 || deadline > MaxActiveDeadline {
		return deny("spec.activeDeadlineSeconds %d: want 1 to %d", deadline, MaxActiveDeadline)
	}
	p := NodeParams{Name: pod.Name, Namespace: pod.Namespace, NodeName: pod.Spec.NodeName, Image: c.Image, Args: args,
		Tolerations: pod.Spec.Tolerations, Target: pod.Annotations[AnnotationTarget], ContainerID: pod.Annotations[AnnotationContainerID],
		AcquisitionID: pod.Labels[LabelAcquisition], ActiveDeadlineSeconds: deadline}
	if p.NodeName == "" {
		return deny("spec.nodeName is empty: the pod must be pinned to the target's node")
	}
	if want := NodePod(p); !sameJSON(&pod, want) {
		path, got, exp := firstDifference(&pod, want)
		return deny("%s is %s, warren's collector pod has %s", path, got, exp)
	}
	return &p, nil
}

// sameJSON compares two pods as their JSON encodings (after strict decoding, what the API server would store).
func sameJSON(a, b *corev1.Pod) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// firstDifference names the first field (in sorted key order, depth first) where a and b differ, and both values.
func firstDifference(a, b *corev1.Pod) (path, got, want string) {
	var ma, mb any
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	p, x, y, _ := diff("", ma, mb)
	return p, show(x), show(y)
}

func diff(path string, a, b any) (string, any, any, bool) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return path, a, b, true
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			x, inA := av[k]
			y, inB := bv[k]
			if !inA {
				return sub, missing{}, y, true
			}
			if !inB {
				return sub, x, missing{}, true
			}
			if p, xa, yb, d := diff(sub, x, y); d {
				return p, xa, yb, true
			}
		}
		return "", nil, nil, false
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return path, a, b, true
		}
		for i := range av {
			if p, x, y, d := diff(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i]); d {
				return p, x, y, true
			}
		}
		return "", nil, nil, false
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		return path, a, b, true
	}
	return "", nil, nil, false
}

type missing struct{}

func show(v any) string {
	if _, ok := v.(missing); ok {
		return "absent"
	}
	if l, ok := v.([]any); ok {
		return fmt.Sprintf("a list of %d", len(l))
	}
	b, _ := json.Marshal(v)
	return clip(string(b))
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

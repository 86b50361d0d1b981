package connector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/auth"
	"github.com/warren-dev/warren/internal/collectorpod"
)

// collectorPodRefusal starts the refusal of a pod creation a podSpec rule checked.
const collectorPodRefusal = "the cluster's policy allows only warren's collector pod here (podSpec " + collectorpod.Kind + "): "

// targetLookupTimeout bounds the connector's own read of a collector pod's target.
const targetLookupTimeout = 10 * time.Second

// checkCollectorPod reads the body of a pod creation (at most collectorpod.MaxBody, application/json, no
// Content-Encoding) and checks it against the podSpec rules: one must let it through; then it checks that the pod
// reads a container the caller may acquire (bindTarget). The bytes checked are the bytes forwarded: r.Body is
// replaced by them. claims is nil when the connector does not verify callers.
func (c *Connector) checkCollectorPod(r *http.Request, namespace string, specs []*auth.PodSpec, claims *auth.Claims) *collectorpod.CheckError {
	if err := collectorpod.CheckRequestBody(r.Header); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, collectorpod.MaxBody+1))
	if err != nil {
		return &collectorpod.CheckError{Code: http.StatusBadRequest, Message: "the pod could not be read: " + err.Error()}
	}
	if len(body) > collectorpod.MaxBody {
		return &collectorpod.CheckError{Code: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf("the pod is larger than %d bytes; warren's collector pod is about 3 KiB", collectorpod.MaxBody)}
	}
	_ = r.Body.Close()
	var first *collectorpod.CheckError
	for _, s := range specs {
		p, cerr := collectorpod.CheckNodePod(body, namespace, s.Allowed())
		if cerr != nil {
			if first == nil {
				first = cerr
			}
			continue
		}
		if err := c.bindTarget(r.Context(), p, claims); err != nil {
			return err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Del("Transfer-Encoding")
		r.TransferEncoding = nil
		return nil
	}
	return first
}

// bindTarget checks that a collector pod reads a container the caller may acquire, not just any container of any
// node: the pod names its target (namespace/pod/container) and the container's id; the caller's token and the
// ceiling must allow exec into that pod (the node mode reads what exec would), and the target pod, as the API server
// has it, must run that container under that id on the node the collector pod is pinned to.
func (c *Connector) bindTarget(ctx context.Context, p *collectorpod.NodeParams, claims *auth.Claims) *collectorpod.CheckError {
	deny := func(format string, args ...any) *collectorpod.CheckError {
		return &collectorpod.CheckError{Code: http.StatusForbidden, Message: "the collector pod's target: " + fmt.Sprintf(format, args...)}
	}
	parts := strings.Split(p.Target, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return deny("annotation %s %q: want NAMESPACE/POD/CONTAINER", collectorpod.AnnotationTarget, clipText(p.Target))
	}
	ns, pod, ctr := parts[0], parts[1], parts[2]
	if want := "containerd://" + p.Args.ContainerID; p.ContainerID != want {
		return deny("annotation %s %q is not the container the collector reads (%s)", collectorpod.AnnotationContainerID, clipText(p.ContainerID), want)
	}
	if claims != nil {
		d := auth.Decide(claims, c.cfg.Ceiling, auth.Attributes{ResourceRequest: true, Verb: "create", Resource: "pods", Subresource: "exec",
			Namespace: ns, Name: pod})
		if !d.Allowed {
			return deny("the node mode reads what exec would, and %s", d.Reason)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, targetLookupTimeout)
	defer cancel()
	obj, err := c.kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return deny("pod %s/%s does not exist", ns, pod)
		}
		return &collectorpod.CheckError{Code: http.StatusServiceUnavailable, Message: "the collector pod's target could not be read: " + err.Error()}
	}
	if obj.Spec.NodeName != p.NodeName {
		return deny("pod %s/%s is on node %q, the collector pod is pinned to %q", ns, pod, obj.Spec.NodeName, p.NodeName)
	}
	for _, st := range append(append(obj.Status.ContainerStatuses, obj.Status.InitContainerStatuses...), obj.Status.EphemeralContainerStatuses...) {
		if st.Name == ctr {
			if st.ContainerID != p.ContainerID {
				return deny("container %s of pod %s/%s is %q, not %s", ctr, ns, pod, st.ContainerID, p.ContainerID)
			}
			return nil
		}
	}
	return deny("pod %s/%s has no container %q", ns, pod, ctr)
}

func clipText(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

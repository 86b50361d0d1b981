package acquire

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/collectorpod"
)

// deleteWait bounds the wait for a deleted collector pod to be gone.
const deleteWait = 30 * time.Second

// nodeMode collects t with a collector pod on t's node that reads containerd's state (collectorpod.NodePod), and
// deletes the pod afterwards, whatever happened.
func (r *run) nodeMode(ctx context.Context, t *target, ex *execer, opts collector.Options, node *corev1.Node, sink collector.Sink, mr *modeResult) error {
	if r.cfg.CollectorImage == "" {
		return unavailable(mr, "no collector image: give --collector-image (warren's collector image, pinned by digest; this build has no default)")
	}
	status, _ := containerStatusOf(t.obj, t.container)
	scheme, id, _ := strings.Cut(status.ContainerID, "://")
	switch {
	case status.ContainerID == "":
		return unavailable(mr, "the pod's status names no container id for %s: the node mode finds the container by it", t.container)
	case scheme != "containerd":
		return unavailable(mr, "container %s runs under %q, not containerd: %s", t.container, scheme, collector.UnsupportedNote)
	case !collector.ValidContainerdID(id):
		return unavailable(mr, "the pod's status names container id %q, which is not a containerd id", status.ContainerID)
	case t.obj.Spec.NodeName == "":
		return unavailable(mr, "pod %s/%s is on no node", t.namespace, t.pod)
	}
	args := r.modeArgs(opts)
	args.Mode, args.ContainerID, args.Namespace = collector.ModeNode, id, r.cfg.NodeContainerdNamespace
	args.RuntimeDir, args.ContainerdRoot = r.cfg.NodeRuntimeDir, r.cfg.NodeContainerdRoot
	deadline := int64((r.cfg.StartTimeout + opts.TimeBudget + 2*time.Minute) / time.Second)
	name := fmt.Sprintf("warren-collector-%s-%d", r.index.AcquisitionID, r.seq.Add(1))
	pod := collectorpod.NodePod(collectorpod.NodeParams{Name: name, Namespace: r.cfg.CollectorNamespace, NodeName: t.obj.Spec.NodeName,
		Image: r.cfg.CollectorImage, Args: args, Tolerations: collectorpod.TolerationsFor(node), Target: t.name(),
		ContainerID: status.ContainerID, AcquisitionID: r.index.AcquisitionID, ActiveDeadlineSeconds: deadline})
	src := &evidence.NodePodSource{Namespace: r.cfg.CollectorNamespace, Pod: name, Node: t.obj.Spec.NodeName, Image: r.cfg.CollectorImage,
		RuntimeDir: args.RuntimeDir, ContainerdRoot: args.ContainerdRoot, ContainerdNamespace: args.Namespace, ContainerID: id, Consent: mr.consent}
	r.cfg.Observer.Warn(fmt.Sprintf("creating collector pod %s/%s on node %s for %s (%s; consent: %s)", src.Namespace, name, src.Node, t.name(), nodeTrace, mr.consent))
	cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	created, err := r.jsonCS.CoreV1().Pods(src.Namespace).Create(cctx, pod, metav1.CreateOptions{FieldManager: "warren-acquire"})
	cancel()
	if err != nil {
		return unavailable(mr, "creating the collector pod %s/%s was refused: %v", src.Namespace, name, apiMessage(err))
	}
	src.UID, src.Created = string(created.UID), r.cfg.Now().UTC()
	mr.nodePod = src
	mr.footprint = append(mr.footprint, fmt.Sprintf("created collector pod %s/%s (uid %s, image %s) on node %s at %s", src.Namespace, name,
		src.UID, src.Image, src.Node, src.Created.Format(time.RFC3339)))
	// Deleted whatever happens, also when the run is interrupted.
	defer r.deleteCollectorPod(context.WithoutCancel(ctx), src, mr)

	st, err := r.waitPod(ctx, src)
	if st != nil {
		src.ImageID = st.ImageID
	}
	if err != nil {
		return err
	}
	ao := collector.AttachOptions{Mode: collector.ModeNode, Arch: opts.Arch, BinaryDir: r.cfg.CollectorDir, MaxBytes: opts.MaxBytes,
		TimeBudget: opts.TimeBudget, Argv: append([]string{collectorpod.CollectorPath}, pod.Spec.Containers[0].Args...)}
	mr.cres, err = collector.CollectAttached(ctx, ex.attach(src.Namespace, name, collectorpod.ContainerName), ao, sink)
	if err != nil {
		return err
	}
	mr.why = "a collector pod on node " + src.Node + " read containerd's state of container " + id
	if n := mr.cres.Node; n != nil {
		src.Snapshotter, src.Drift = n.Snapshotter, n.Drift
		mr.why += " (snapshotter " + n.Snapshotter + ")"
	}
	return nil
}

// waitPod polls the collector pod until its container runs (at most StartTimeout).
func (r *run) waitPod(ctx context.Context, src *evidence.NodePodSource) (*corev1.ContainerStatus, error) {
	var last *corev1.ContainerStatus
	err := r.poll(ctx, func(ctx context.Context) (bool, error) {
		pod, err := r.cs.CoreV1().Pods(src.Namespace).Get(ctx, src.Pod, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("reading collector pod %s/%s: %v", src.Namespace, src.Pod, apiMessage(err))
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("collector pod %s/%s ended before the acquirer attached (%s: %s %s)", src.Namespace, src.Pod,
				pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
		}
		for i := range pod.Status.ContainerStatuses {
			s := &pod.Status.ContainerStatuses[i]
			last = s
			switch st := s.State; {
			case st.Running != nil:
				return true, nil
			case st.Terminated != nil:
				return false, fmt.Errorf("collector pod %s/%s: its container ended before the acquirer attached (%s, exit %d: %s)",
					src.Namespace, src.Pod, st.Terminated.Reason, st.Terminated.ExitCode, st.Terminated.Message)
			case st.Waiting != nil && st.Waiting.Reason != "" && st.Waiting.Reason != "ContainerCreating":
				return false, fmt.Errorf("collector pod %s/%s does not start: %s: %s", src.Namespace, src.Pod, st.Waiting.Reason, st.Waiting.Message)
			}
		}
		return false, nil
	})
	if err == errPollTimeout {
		err = fmt.Errorf("collector pod %s/%s did not start within %s", src.Namespace, src.Pod, r.cfg.StartTimeout)
	}
	return last, err
}

// deleteCollectorPod deletes the collector pod (grace 0, only that pod: a UID precondition) and waits until the API
// no longer has it (at most deleteWait); the outcome goes into the statement and the footprint.
func (r *run) deleteCollectorPod(ctx context.Context, src *evidence.NodePodSource, mr *modeResult) {
	zero := int64(0)
	dctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	err := r.cs.CoreV1().Pods(src.Namespace).Delete(dctx, src.Pod, metav1.DeleteOptions{GracePeriodSeconds: &zero,
		Preconditions: metav1.NewUIDPreconditions(src.UID)})
	cancel()
	src.Deleted = r.cfg.Now().UTC()
	if err != nil && !apierrors.IsNotFound(err) {
		src.DeleteError = apiMessage(err)
		mr.footprint = append(mr.footprint, fmt.Sprintf("failed to delete collector pod %s/%s: %s: delete it by hand (kubectl -n %s delete pod %s)",
			src.Namespace, src.Pod, src.DeleteError, src.Namespace, src.Pod))
		r.cfg.Observer.Warn(mr.footprint[len(mr.footprint)-1])
		return
	}
	deadline := time.Now().Add(deleteWait)
	wait := 100 * time.Millisecond
	for {
		gctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
		_, err := r.cs.CoreV1().Pods(src.Namespace).Get(gctx, src.Pod, metav1.GetOptions{})
		cancel()
		if apierrors.IsNotFound(err) {
			src.DeletedConfirmed = true
			mr.footprint = append(mr.footprint, fmt.Sprintf("deleted collector pod %s/%s at %s (confirmed gone)", src.Namespace, src.Pod,
				src.Deleted.Format(time.RFC3339)))
			return
		}
		if time.Now().After(deadline) {
			mr.footprint = append(mr.footprint, fmt.Sprintf("deleted collector pod %s/%s at %s; the API still had it %s later (the kubelet "+
				"ends it; its deadline is %s)", src.Namespace, src.Pod, src.Deleted.Format(time.RFC3339), deleteWait, r.cfg.StartTimeout))
			return
		}
		time.Sleep(wait)
		wait = min(wait*2, 2*time.Second)
	}
}

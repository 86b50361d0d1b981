package acquire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/warren-dev/warren/collector"
	"github.com/warren-dev/warren/evidence"
	"github.com/warren-dev/warren/internal/collectorpod"
)

// modeResult is what one mode's collection of a target did.
type modeResult struct {
	mode      string
	consent   string // how the examiner accepted the mode's trace
	cres      *collector.Result
	why       string // for the used attempt: how it went (the ephemeral container's user, the node's snapshotter)
	ephemeral *evidence.EphemeralSource
	nodePod   *evidence.NodePodSource
	footprint []string
	// unavailable: the mode cannot read this container (said before anything was written); the next may.
	unavailable bool
}

// errUnavailable marks a mode's refusal of a container it cannot read.
type errUnavailable struct{ msg string }

func (e *errUnavailable) Error() string { return e.msg }

func unavailable(mr *modeResult, format string, args ...any) error {
	mr.unavailable = true
	return &errUnavailable{fmt.Sprintf(format, args...)}
}

// modeArgs are the collector's arguments for the run's options.
func (r *run) modeArgs(opts collector.Options) collector.ModeArgs {
	return collector.ModeArgs{Options: collector.Options{Profile: opts.Profile, MaxBytes: opts.MaxBytes, TimeBudget: opts.TimeBudget,
		RedactEnv: opts.RedactEnv, CopySecrets: opts.CopySecrets}, Wait: r.cfg.StartTimeout + time.Minute}
}

// ephemeral collects t through an ephemeral container running the collector image in t's PID namespace.
func (r *run) ephemeral(ctx context.Context, t *target, ex *execer, opts collector.Options, node *corev1.Node, sink collector.Sink, mr *modeResult) error {
	if r.cfg.CollectorImage == "" {
		return unavailable(mr, "no collector image: give --collector-image (warren's collector image, pinned by digest; this build has no default)")
	}
	status, _ := containerStatusOf(t.obj, t.container)
	name := fmt.Sprintf("%s%s-%d", collectorpod.EphemeralPrefix, r.index.AcquisitionID, r.seq.Add(1))
	args := r.modeArgs(opts)
	if id, ok := runtimeID(status.ContainerID); ok {
		args.TargetContainerID = id
	}
	plan, err := collectorpod.Ephemeral(collectorpod.Target{Pod: t.obj, Container: t.container}, name, r.cfg.CollectorImage, args)
	if err != nil {
		return unavailable(mr, "%v", err)
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"ephemeralContainers": []corev1.EphemeralContainer{plan.Container}}})
	if err != nil {
		return err
	}
	r.cfg.Observer.Warn(fmt.Sprintf("adding ephemeral container %s to pod %s/%s (%s; consent: %s)", name, t.namespace, t.pod, ephemeralTrace, mr.consent))
	pctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	_, err = r.cs.CoreV1().Pods(t.namespace).Patch(pctx, t.pod, types.StrategicMergePatchType, patch, metav1.PatchOptions{FieldManager: "warren-acquire"}, "ephemeralcontainers")
	cancel()
	if err != nil {
		// Nothing was added: the next mode may try.
		return unavailable(mr, "adding the ephemeral container was refused: %v", apiMessage(err))
	}
	added := r.cfg.Now().UTC()
	mr.ephemeral = &evidence.EphemeralSource{Container: name, Image: r.cfg.CollectorImage, TargetContainer: t.container, User: plan.User,
		Capabilities: plan.Capabilities, Consent: mr.consent, Added: added,
		Log: "its stdout, sealed with a key only this acquisition had, is also in the node's container log of the pod (kubectl logs -c " + name + "): ciphertext only"}
	mr.footprint = append(mr.footprint, fmt.Sprintf("added ephemeral container %s (image %s) to pod %s/%s at %s: it cannot be removed and stays in "+
		"the pod's spec and status for the pod's life", name, r.cfg.CollectorImage, t.namespace, t.pod, added.Format(time.RFC3339)))
	mr.why = "an ephemeral container in the target's PID namespace, as " + plan.User + "; capabilities: " + plan.Capabilities
	st, err := r.waitEphemeral(ctx, t, name)
	if st != nil {
		mr.ephemeral.ImageID = st.ImageID
	}
	if err != nil {
		return err
	}
	ao := collector.AttachOptions{Mode: collector.ModeEphemeral, Arch: opts.Arch, BinaryDir: r.cfg.CollectorDir, MaxBytes: opts.MaxBytes,
		TimeBudget: opts.TimeBudget, Argv: append([]string{collectorpod.CollectorPath}, plan.Container.Args...)}
	mr.cres, err = collector.CollectAttached(ctx, ex.attach(t.namespace, t.pod, name), ao, sink)
	if err != nil {
		return err
	}
	mr.footprint = append(mr.footprint, "the ephemeral container's collector exited when the collection ended; its process is gone, its "+
		"(sealed) output stays in the node's log")
	return nil
}

// waitEphemeral polls the pod until the ephemeral container runs (at most StartTimeout).
func (r *run) waitEphemeral(ctx context.Context, t *target, name string) (*corev1.ContainerStatus, error) {
	var last *corev1.ContainerStatus
	err := r.poll(ctx, func(ctx context.Context) (bool, error) {
		pod, err := r.cs.CoreV1().Pods(t.namespace).Get(ctx, t.pod, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("reading pod %s/%s: %v", t.namespace, t.pod, apiMessage(err))
		}
		for i := range pod.Status.EphemeralContainerStatuses {
			s := &pod.Status.EphemeralContainerStatuses[i]
			if s.Name != name {
				continue
			}
			last = s
			switch st := s.State; {
			case st.Running != nil:
				return true, nil
			case st.Terminated != nil:
				return false, fmt.Errorf("the ephemeral container %s ended before the acquirer attached (%s, exit %d: %s)", name,
					st.Terminated.Reason, st.Terminated.ExitCode, st.Terminated.Message)
			case st.Waiting != nil && st.Waiting.Reason != "" && st.Waiting.Reason != "ContainerCreating" && st.Waiting.Reason != "PodInitializing":
				return false, fmt.Errorf("the ephemeral container %s does not start: %s: %s", name, st.Waiting.Reason, st.Waiting.Message)
			}
		}
		return false, nil
	})
	if err == errPollTimeout {
		err = fmt.Errorf("the ephemeral container %s did not start within %s", name, r.cfg.StartTimeout)
	}
	return last, err
}

var errPollTimeout = errors.New("timed out")

// poll calls check (each with its own request timeout) until it reports done or fails, at growing intervals
// (100 ms to 2 s), for at most StartTimeout.
func (r *run) poll(ctx context.Context, check func(ctx context.Context) (bool, error)) error {
	deadline := time.Now().Add(r.cfg.StartTimeout)
	wait := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
		done, err := check(cctx)
		cancel()
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errPollTimeout
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return context.Cause(ctx)
		case <-timer.C:
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// runtimeID splits a kubelet container id (containerd://ID) into the runtime's id.
func runtimeID(id string) (string, bool) {
	for i := 0; i+2 < len(id); i++ {
		if id[i:i+3] == "://" {
			rid := id[i+3:]
			return rid, collector.ValidContainerdID(rid)
		}
	}
	return "", false
}

// apiMessage is an API error's message (a Status's), else the error.
func apiMessage(err error) string {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return strconv.Itoa(int(se.ErrStatus.Code)) + " " + se.ErrStatus.Message
	}
	return err.Error()
}

// describeModeError turns what a mode failed with into what to do.
func describeModeError(mode string, err error, t *target) string {
	var ue *errUnavailable
	switch {
	case errors.As(err, &ue):
		return ue.msg
	case mode == ModeExec:
		return describeExecError(err, t)
	case errors.Is(err, collector.ErrSelfHash):
		return err.Error() + ": the collector image does not carry this warren's collector (build both from one source, or point " +
			"--collector-dir at the binaries the image was built from)"
	case statusOf(err) != nil && statusOf(err).ErrStatus.Code == http.StatusForbidden:
		return "attach refused: " + statusOf(err).ErrStatus.Message
	}
	return err.Error()
}

package fakekubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// podState is the local side of one pod: its shared namespaces, its volumes, and its containers. Fields are set
// when the pod starts and not changed after, except containers, which gains ephemeral containers (under mu).
type podState struct {
	uid       types.UID
	key       string // namespace/name
	dir       string // RootDir/pods/NAMESPACE_NAME_UID
	startTime time.Time
	ns        *podNamespaces
	volumes   map[string]*podVolume
	log       *slog.Logger

	mu         sync.Mutex
	containers map[string]*container // by name, ephemeral ones included
}

// container returns the container called name, or nil.
func (p *podState) container(name string) *container {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.containers[name]
}

// runPods starts the pod informer and the sync workers and waits for the informer's first list. The returned channel
// is closed once ctx is cancelled and every worker and every pod process has stopped.
func (k *Kubelet) runPods(ctx context.Context) (<-chan struct{}, error) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.nodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	informer := podInformer.Informer()
	lister := podInformer.Lister()
	k.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("failed to watch pods: %w", err)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	factory.Start(ctx.Done())
	for range workers {
		wg.Go(func() {
			for k.syncNext(ctx, lister) {
			}
		})
	}
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
		factory.Shutdown() // waits for the informer goroutines
		wg.Wait()
		k.log.Debug("pod sync stopped")
		k.stopAllPods()
		close(done)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		<-done
		return nil, fmt.Errorf("failed to list the pods of node %s: %w", k.nodeName, context.Cause(ctx))
	}
	return done, nil
}

// syncNext syncs one pod from the queue. It returns false when the queue is shut down.
func (k *Kubelet) syncNext(ctx context.Context, lister listersv1.PodLister) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	if err := k.syncPod(ctx, lister, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		if apierrors.IsConflict(err) {
			k.log.Debug("pod changed while syncing, retrying", "pod", key, "err", err)
		} else {
			k.log.Warn("failed to sync pod, retrying", "pod", key, "err", err)
		}
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// syncPod makes the local containers match the pod in the informer's cache: start them for a new pod, kill them and
// finish the deletion for a pod being deleted, and report their state in the pod's status.
func (k *Kubelet) syncPod(ctx context.Context, lister listersv1.PodLister, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key we made; nothing to retry
	}
	pod, err := lister.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		k.stopPod(key, nil, 0)
		return nil
	}
	if err != nil {
		return err
	}
	local := k.podState(key)
	if local != nil && local.uid != pod.UID { // deleted and re-created under the same name
		k.stopPod(key, local, 0)
		local = nil
	}
	if pod.DeletionTimestamp != nil {
		grace := k.grace
		if g := pod.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
			grace = time.Duration(*g) * time.Second
		}
		if local != nil {
			k.stopPod(key, local, grace)
		}
		// Finish the deletion as the kubelet does: grace 0, and only for the pod we stopped.
		err := k.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("failed to delete pod %s: %w", key, err)
		}
		k.log.Info("deleted pod", "pod", key)
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if local == nil {
			return nil // finished before we (re)started: a terminal pod never runs again
		}
	}
	if local == nil {
		local, err = k.startPod(ctx, pod)
		if err != nil {
			return err
		}
	}
	if err := k.startEphemeral(pod, local); err != nil {
		return err
	}
	return k.updateStatus(ctx, pod, local)
}

func (k *Kubelet) podState(key string) *podState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[key]
}

// startPod prepares the pod (directory, volumes, /etc/hosts and friends, UTS and IPC namespaces) and starts its
// containers. A container that cannot start is reported waiting or terminated; the others run regardless.
func (k *Kubelet) startPod(ctx context.Context, pod *corev1.Pod) (*podState, error) {
	key := pod.Namespace + "/" + pod.Name
	p := &podState{
		uid:        pod.UID,
		key:        key,
		dir:        filepath.Join(k.rootDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
		startTime:  time.Now(),
		containers: map[string]*container{},
		log:        k.log.With("pod", key),
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create the directory of pod %s: %w", key, err)
	}
	fail := func(err error) (*podState, error) {
		if p.ns != nil {
			p.ns.close()
		}
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > 63 {
		hostname = hostname[:63]
	}
	if err := writePodFiles(p.dir, hostname, pod); err != nil {
		return fail(err)
	}
	var err error
	if p.volumes, err = k.prepareVolumes(ctx, pod, p.dir); err != nil {
		return fail(fmt.Errorf("pod %s: %w", key, err))
	}
	if p.ns, err = newPodNamespaces(hostname, pod.Spec.HostIPC); err != nil {
		return fail(err)
	}
	for _, spec := range pod.Spec.Containers {
		cp := containerParams{pod: pod, state: p, log: p.log.With("container", spec.Name), onExit: func() { k.queue.Add(key) }}
		var c *container
		var err error
		if id := pod.Annotations[AnnotationExternalPrefix+spec.Name]; id != "" {
			c, err = k.externalContainer(spec, cp, id)
		} else {
			c, err = k.startContainer(spec, cp)
		}
		if err != nil {
			p.stop(time.Millisecond)
			return fail(err)
		}
		p.containers[spec.Name] = c
	}
	k.mu.Lock()
	k.pods[key] = p
	k.mu.Unlock()
	p.log.Info("started pod", "uid", string(pod.UID), "containers", len(p.containers))
	return p, nil
}

// startEphemeral starts the ephemeral containers of pod that are not running here yet, each in the PID namespace
// of its target container when it names one.
func (k *Kubelet) startEphemeral(pod *corev1.Pod, p *podState) error {
	for _, ec := range pod.Spec.EphemeralContainers {
		if p.container(ec.Name) != nil {
			continue
		}
		cp := containerParams{pod: pod, state: p, ephemeral: true, log: p.log.With("container", ec.Name),
			onExit: func() { k.queue.Add(p.key) }}
		if ec.TargetContainerName != "" {
			if cp.target = p.container(ec.TargetContainerName); cp.target == nil {
				return fmt.Errorf("ephemeral container %s: no target container %q", ec.Name, ec.TargetContainerName)
			}
		}
		c, err := k.startContainer(corev1.Container(ec.EphemeralContainerCommon), cp)
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.containers[ec.Name] = c
		p.mu.Unlock()
	}
	return nil
}

// writePodFiles writes the files the kubelet mounts in every container: /etc/hosts, /etc/hostname and
// /etc/resolv.conf (the node's, the network being the node's).
func writePodFiles(dir, hostname string, pod *corev1.Pod) error {
	hosts := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"127.0.0.1\t" + hostname + "\n"
	for _, ha := range pod.Spec.HostAliases {
		hosts += ha.IP + "\t" + strings.Join(ha.Hostnames, "\t") + "\n"
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil // no resolver configuration on the node: an empty file, as the kubelet would write
	}
	for name, data := range map[string][]byte{"etc-hosts": []byte(hosts), "etc-hostname": []byte(hostname + "\n"),
		"etc-resolv.conf": resolv} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("failed to write the pod's %s: %w", name, err)
		}
	}
	return nil
}

// stopPod forgets the pod under key (only if it is p, when p is not nil), kills its processes and removes its
// directory.
func (k *Kubelet) stopPod(key string, p *podState, grace time.Duration) {
	k.mu.Lock()
	cur := k.pods[key]
	if cur == nil || (p != nil && cur != p) {
		k.mu.Unlock()
		return
	}
	delete(k.pods, key)
	k.mu.Unlock()
	if grace <= 0 {
		grace = time.Millisecond // SIGTERM, then SIGKILL almost at once
	}
	cur.stop(grace)
	cur.remove()
	k.log.Info("stopped pod", "pod", key)
}

// stopAllPods kills every pod's processes and waits for them. The pods stay Running in the API.
func (k *Kubelet) stopAllPods() {
	k.mu.Lock()
	pods := k.pods
	k.pods = map[string]*podState{}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			p.stop(k.grace)
			p.remove()
		})
	}
	wg.Wait()
}

// stop stops every container of the pod and waits for them.
func (p *podState) stop(grace time.Duration) {
	p.mu.Lock()
	cs := make([]*container, 0, len(p.containers))
	for _, c := range p.containers {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.stop(grace) })
	}
	wg.Wait()
}

// remove releases the pod's namespaces and removes its directory; its containers have stopped.
func (p *podState) remove() {
	if p.ns != nil {
		p.ns.close()
	}
	if err := os.RemoveAll(p.dir); err != nil {
		p.log.Warn("failed to remove the pod directory", "err", err)
	}
}

// updateStatus writes the status the local containers imply, unless the pod already has it. The status is a pure
// function of the local state (times are kept to the second, as the API stores them), so an unchanged pod costs no
// write.
func (k *Kubelet) updateStatus(ctx context.Context, pod *corev1.Pod, p *podState) error {
	want := k.desiredStatus(pod, p)
	if equality.Semantic.DeepEqual(pod.Status, want) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = want
	if _, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile: the informer tells us
		}
		return fmt.Errorf("failed to update the status of pod %s: %w", p.key, err)
	}
	k.log.Info("updated pod status", "pod", p.key, "phase", want.Phase)
	return nil
}

// desiredStatus is pod.Status with what we own replaced: phase, IPs, start time, conditions, container statuses.
//
// The phase follows the containers: Pending while any waits (no image, a configuration it cannot apply), else
// Running while any runs. Once all have exited, restartPolicy Never and OnFailure
// give Succeeded (all exit codes 0) or Failed; Always keeps Running, as a kubelet would while it restarts them (we do
// not restart: the containers stay terminated and the pod not Ready).
func (k *Kubelet) desiredStatus(pod *corev1.Pod, p *podState) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	ip := k.nodeIP.String()
	st.HostIP, st.HostIPs = ip, []corev1.HostIP{{IP: ip}}
	st.PodIP, st.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	start := metav1.NewTime(p.startTime.Truncate(time.Second))
	st.StartTime = &start

	allRunning, allExited, allZero, anyWaiting := true, true, true, false
	st.ContainerStatuses = nil
	for _, spec := range pod.Spec.Containers {
		cs := p.container(spec.Name).status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		switch t := cs.State.Terminated; {
		case cs.State.Waiting != nil:
			allRunning, allExited, anyWaiting = false, false, true
		case t != nil:
			allRunning = false
			allZero = allZero && t.ExitCode == 0
		default:
			allExited = false
		}
	}
	st.EphemeralContainerStatuses = nil
	for _, ec := range pod.Spec.EphemeralContainers {
		if c := p.container(ec.Name); c != nil {
			st.EphemeralContainerStatuses = append(st.EphemeralContainerStatuses, c.status())
		}
	}
	st.Phase = corev1.PodRunning
	switch {
	case anyWaiting:
		st.Phase = corev1.PodPending
	case allExited && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		st.Phase = corev1.PodFailed
		if allZero {
			st.Phase = corev1.PodSucceeded
		}
	}
	st.Reason, st.Message = "", ""

	ready := corev1.ConditionFalse
	if allRunning {
		ready = corev1.ConditionTrue
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for _, c := range []struct {
		typ    corev1.PodConditionType
		status corev1.ConditionStatus
	}{
		{corev1.PodScheduled, corev1.ConditionTrue},
		{corev1.PodReadyToStartContainers, corev1.ConditionTrue},
		{corev1.PodInitialized, corev1.ConditionTrue},
		{corev1.ContainersReady, ready},
		{corev1.PodReady, ready},
	} {
		st.Conditions = setCondition(st.Conditions, c.typ, c.status, start, now)
	}
	return st
}

// setCondition sets the condition of type typ to status. A new condition dates from start; a changed one from now;
// an unchanged one keeps its time, so that the same local state always yields the same status.
func setCondition(conds []corev1.PodCondition, typ corev1.PodConditionType, status corev1.ConditionStatus,
	start, now metav1.Time) []corev1.PodCondition {
	for i := range conds {
		if conds[i].Type != typ {
			continue
		}
		if conds[i].Status != status {
			conds[i].Status = status
			conds[i].LastTransitionTime = now
			conds[i].Reason, conds[i].Message = "", ""
		}
		return conds
	}
	return append(conds, corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: start})
}

// errNoContainer is returned by lookups for a pod or container that is not running here.
var errNoContainer = errors.New("no such pod or container on this node")

// lookup returns the local pod for namespace/name, checking uid when it is not empty.
func (k *Kubelet) lookup(namespace, name, uid string) (*podState, error) {
	p := k.podState(namespace + "/" + name)
	if p == nil || (uid != "" && string(p.uid) != uid) {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, errNoContainer)
	}
	return p, nil
}

// lookupContainer returns a container of the local pod namespace/name.
func (k *Kubelet) lookupContainer(namespace, name, uid, containerName string) (*container, error) {
	p, err := k.lookup(namespace, name, uid)
	if err != nil {
		return nil, err
	}
	c := p.container(containerName)
	if c == nil {
		return nil, fmt.Errorf("container %q in pod %s/%s: %w", containerName, namespace, name, errNoContainer)
	}
	return c, nil
}

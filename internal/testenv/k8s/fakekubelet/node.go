package fakekubelet

import (
	"context"
	"fmt"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// registerNode creates the Node, or takes over an existing one of the same name, and writes a Ready status that
// points the apiserver at this kubelet. Without a controller-manager nothing marks the Node NotReady later, so there is
// no Lease and no heartbeat.
//
// Only an InternalIP address is published: the apiserver's default preferred address type is Hostname, and a
// hostname of a fake node does not resolve. With InternalIP alone it works with or without
// --kubelet-preferred-address-types=InternalIP.
//
// The Node declares no features: with ExtendWebSocketsToKubelet undeclared, the apiserver translates WebSocket
// exec/attach/port-forward to SPDY before it reaches us.
func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: k.nodeName,
		Labels: map[string]string{
			corev1.LabelHostname:   k.nodeName,
			corev1.LabelOSStable:   "linux",
			corev1.LabelArchStable: runtime.GOARCH,
		},
	}}
	if _, err := nodes.Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create Node %s: %w", k.nodeName, err)
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("8"),
		corev1.ResourceMemory:           resource.MustParse("16Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := nodes.Get(ctx, k.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.nodeIP.String()}}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.port)
		n.Status.Capacity = capacity
		n.Status.Allocatable = capacity
		n.Status.Phase = corev1.NodeRunning
		n.Status.NodeInfo = corev1.NodeSystemInfo{
			KubeletVersion:          "v1.37.2-fakekubelet",
			OSImage:                 "fakekubelet (containers in Linux namespaces)",
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "fakekubelet://2",
		}
		n.Status.Conditions = []corev1.NodeCondition{{
			Type:               corev1.NodeReady,
			Status:             corev1.ConditionTrue,
			Reason:             "KubeletReady",
			Message:            "fakekubelet is posting ready status",
			LastHeartbeatTime:  now,
			LastTransitionTime: now,
		}}
		_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to update the status of Node %s: %w", k.nodeName, err)
	}
	k.log.Info("registered node", "address", k.nodeIP.String(), "port", k.port)
	return nil
}

package noderuntime

import (
	"context"
	"fmt"
	goruntime "runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Heartbeat timing, like the kubelet's defaults: the Lease is what kcm's
// node lifecycle controller watches; the Ready condition is refreshed less
// often.
const (
	leaseDuration    = 40 * time.Second
	leaseRenewPeriod = 10 * time.Second
	statusPeriod     = 30 * time.Second
	nodeLeaseNS      = corev1.NamespaceNodeLease
	kubeletVersion   = "v1.37.1"
	runtimeVersion   = "palisade-lab://1"
	// containerIDScheme prefixes container IDs in pod status.
	containerIDScheme = "palisade-lab://"
)

// nodeResources is what every lab node offers the scheduler.
var nodeResources = corev1.ResourceList{
	corev1.ResourceCPU:    resource.MustParse("8"),
	corev1.ResourceMemory: resource.MustParse("32Gi"),
	corev1.ResourcePods:   resource.MustParse("110"),
}

// newNode is the Node object the runtime registers.
func newNode(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			corev1.LabelHostname:   name,
			corev1.LabelOSStable:   "linux",
			corev1.LabelArchStable: goruntime.GOARCH,
		},
	}}
	setNodeStatus(n, ip, time.Now())
	return n
}

// setNodeStatus sets the status a healthy kubelet reports, with heartbeat
// time now.
func setNodeStatus(n *corev1.Node, ip string, now time.Time) {
	t := metav1.NewTime(now)
	n.Status.Capacity = nodeResources.DeepCopy()
	n.Status.Allocatable = nodeResources.DeepCopy()
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: ip},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion: kubeletVersion, ContainerRuntimeVersion: runtimeVersion,
		OperatingSystem: "linux", Architecture: goruntime.GOARCH,
	}
	n.Status.Phase = corev1.NodeRunning
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "palisade-lab node runtime is posting ready status"},
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID"},
	}
	for _, c := range conds {
		c.LastHeartbeatTime = t
		c.LastTransitionTime = t
		for _, old := range n.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		setNodeCondition(n, c)
	}
}

func setNodeCondition(n *corev1.Node, c corev1.NodeCondition) {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == c.Type {
			n.Status.Conditions[i] = c
			return
		}
	}
	n.Status.Conditions = append(n.Status.Conditions, c)
}

// registerNode creates the Node (or refreshes an existing one's status).
func registerNode(ctx context.Context, client kubernetes.Interface, name, ip string) (*corev1.Node, error) {
	n, err := client.CoreV1().Nodes().Create(ctx, newNode(name, ip), metav1.CreateOptions{})
	if err == nil {
		return n, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	return updateNodeStatus(ctx, client, name, ip)
}

func updateNodeStatus(ctx context.Context, client kubernetes.Interface, name, ip string) (*corev1.Node, error) {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	setNodeStatus(n, ip, time.Now())
	return client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
}

// heartbeat renews the node's Lease and refreshes its status until ctx ends.
func heartbeat(ctx context.Context, client kubernetes.Interface, node *corev1.Node, ip string) {
	logger := klog.FromContext(ctx)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := renewLease(ctx, client, node); err != nil {
			logger.Error(err, "Renewing node lease failed")
		}
	}, leaseRenewPeriod)
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if _, err := updateNodeStatus(ctx, client, node.Name, ip); err != nil {
			logger.Error(err, "Updating node status failed")
		}
	}, statusPeriod)
}

func renewLease(ctx context.Context, client kubernetes.Interface, node *corev1.Node) error {
	leases := client.CoordinationV1().Leases(nodeLeaseNS)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, node.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: node.Name, Namespace: nodeLeaseNS,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(node.Name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// Package nodecontroller keeps the node's view of the other nodes current:
// it watches the cluster's Node objects and hands the complete list of
// remote nodes (name, transport address = InternalIP, pod CIDR) to a sink
// whenever it changes, retrying with backoff while the sink fails. It is
// level-triggered: every sync computes the whole list from the informer's
// cache, so nodes joining, leaving or changing address all take one path.
package nodecontroller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/openflow"
)

// Sink realizes the remote nodes (the datapath's flows, the node's routes).
type Sink func(ctx context.Context, nodes []openflow.RemoteNode) error

// syncKey is the only item of the queue: every change means "recompute".
const syncKey = "nodes"

// Controller watches Nodes and feeds the sink.
type Controller struct {
	self    string
	local   netip.Prefix
	sink    Sink
	lister  corelisters.NodeLister
	synced  cache.InformerSynced
	queue   workqueue.TypedRateLimitingInterface[string]
	factory informers.SharedInformerFactory
	// last is what the sink accepted last.
	last []openflow.RemoteNode
}

// New returns a controller for node self, whose own pod CIDR is local.
func New(kube kubernetes.Interface, self string, local netip.Prefix, sink Sink) (*Controller, error) {
	if self == "" || !local.IsValid() || sink == nil {
		return nil, fmt.Errorf("nodecontroller: node name, local pod CIDR and sink are required")
	}
	factory := informers.NewSharedInformerFactory(kube, 0)
	nodes := factory.Core().V1().Nodes()
	c := &Controller{
		self: self, local: local.Masked(), sink: sink,
		lister: nodes.Lister(), synced: nodes.Informer().HasSynced, factory: factory,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedMaxOfRateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
				// The whole list is recomputed each time: at most 10 syncs
				// a second whatever the churn.
				&workqueue.TypedBucketRateLimiter[string]{Limiter: newLimiter()},
			),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodes"}),
	}
	enqueue := func(any) { c.queue.Add(syncKey) }
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, _ any) { c.queue.Add(syncKey) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("nodecontroller: %w", err)
	}
	return c, nil
}

// Run syncs until ctx is done. Nothing is handed to the sink before the
// informer has synced, so a restarting agent never removes a node's flows
// because it has not seen the node yet.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx).WithName("nodecontroller")
	ctx = klog.NewContext(ctx, logger)
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		return
	}
	c.queue.Add(syncKey)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx); err != nil {
		klog.FromContext(ctx).Error(err, "Syncing remote nodes failed; retrying")
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *Controller) sync(ctx context.Context) error {
	nodes, err := c.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	remotes, skipped := RemoteNodes(c.self, c.local, nodes)
	for name, why := range skipped {
		klog.FromContext(ctx).V(2).Info("Node not reachable through the tunnel yet", "node", name, "reason", why)
	}
	if slices.Equal(remotes, c.last) && c.last != nil {
		return nil
	}
	start := time.Now()
	if err := c.sink(ctx, remotes); err != nil {
		return err
	}
	c.last = remotes
	klog.FromContext(ctx).Info("Remote nodes realized", "count", len(remotes), "duration", time.Since(start))
	return nil
}

// RemoteNodes computes the remote nodes from Node objects, sorted by name:
// every node but self with an IPv4 InternalIP and an IPv4 pod CIDR that
// overlaps neither local nor another node's. Nodes left out are returned
// with the reason (a node without a pod CIDR yet is normal while it joins).
func RemoteNodes(self string, local netip.Prefix, nodes []*corev1.Node) ([]openflow.RemoteNode, map[string]string) {
	skipped := map[string]string{}
	var out []openflow.RemoteNode
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		ip, err := internalIP(n)
		if err != nil {
			skipped[n.Name] = err.Error()
			continue
		}
		cidr, err := podCIDR(n)
		if err != nil {
			skipped[n.Name] = err.Error()
			continue
		}
		if cidr.Overlaps(local) {
			skipped[n.Name] = fmt.Sprintf("pod CIDR %s overlaps this node's %s", cidr, local)
			continue
		}
		out = append(out, openflow.RemoteNode{Name: n.Name, IP: ip, PodCIDR: cidr})
	}
	openflow.SortRemoteNodes(out)
	// Two nodes claiming overlapping CIDRs or one address: neither is
	// trusted until the conflict is resolved.
	bad := map[int]bool{}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			switch {
			case out[i].PodCIDR.Overlaps(out[j].PodCIDR):
				bad[i], bad[j] = true, true
				skipped[out[i].Name] = fmt.Sprintf("pod CIDR %s overlaps node %s's", out[i].PodCIDR, out[j].Name)
				skipped[out[j].Name] = fmt.Sprintf("pod CIDR %s overlaps node %s's", out[j].PodCIDR, out[i].Name)
			case out[i].IP == out[j].IP:
				bad[i], bad[j] = true, true
				skipped[out[i].Name] = fmt.Sprintf("address %s is also node %s's", out[i].IP, out[j].Name)
				skipped[out[j].Name] = fmt.Sprintf("address %s is also node %s's", out[j].IP, out[i].Name)
			}
		}
	}
	result := []openflow.RemoteNode{}
	for i, r := range out {
		if !bad[i] {
			result = append(result, r)
		}
	}
	return result, skipped
}

func internalIP(n *corev1.Node) (netip.Addr, error) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv4 InternalIP")
}

func podCIDR(n *corev1.Node) (netip.Prefix, error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked(), nil
		}
	}
	if len(cidrs) == 0 {
		return netip.Prefix{}, fmt.Errorf("no pod CIDR yet")
	}
	return netip.Prefix{}, fmt.Errorf("no IPv4 pod CIDR in %v", cidrs)
}

func newLimiter() *rate.Limiter { return rate.NewLimiter(rate.Limit(10), 1) }

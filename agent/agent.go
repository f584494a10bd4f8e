// Package agent wires one node's agent together: the OVS bridge, the
// datapath reconciler, the CNI server and the policy watch from the
// controller.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/cniserver"
	npcontroller "palisade.dev/palisade/agent/controller/networkpolicy"
	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/debug"
	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/ipam"
	"palisade.dev/palisade/agent/metrics"
	"palisade.dev/palisade/agent/nodecontroller"
	"palisade.dev/palisade/agent/nodenet"
	aof "palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/ovs/openflow"
	"palisade.dev/palisade/ovs/ovsconfig"
	"palisade.dev/palisade/ovs/ovsctl"
)

// Run runs the agent until ctx is done.
func Run(ctx context.Context, o *Options) error {
	logger := klog.FromContext(ctx)

	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	node, podCIDR, err := waitForPodCIDR(ctx, kube, o.NodeName)
	if err != nil {
		return err
	}
	if o.MTU == 0 {
		if o.MTU, err = mtuFromNode(node); err != nil {
			return fmt.Errorf("finding the pod MTU (set --mtu to choose it): %w", err)
		}
		logger.Info("Pod MTU from the node's uplink", "mtu", o.MTU)
	}
	logger.Info("Node pod CIDR", "node", o.NodeName, "podCIDR", podCIDR)

	// The bridge and its named tables.
	bridge, err := ovsconfig.New(ctx, o.OVSDB, o.Bridge, o.DatapathType)
	if err != nil {
		return fmt.Errorf("connecting to OVSDB at %s: %w", o.OVSDB, err)
	}
	defer bridge.Close()
	if err := bridge.EnsureBridge(ctx); err != nil {
		return err
	}
	if err := bridge.SetTableNames(ctx, aof.TableNames()); err != nil {
		return err
	}
	ofClient := openflow.NewClient(o.OFSocket)
	if err := ofClient.Connect(ctx); err != nil {
		return fmt.Errorf("connecting to the OpenFlow socket %s: %w", o.OFSocket, err)
	}
	defer ofClient.Close()
	dp := datapath.New(datapath.FlushAfterPolicyChanges(ofClient, func(ctx context.Context) error {
		_, err := ovsctl.Appctl(ctx, o.OVSUnixctl, "revalidator/purge")
		return err
	}))
	// This run's restart round, in every cookie: flows say which agent run
	// installed them.
	prevRound, err := bridge.BridgeExternalID(ctx, aof.RoundExternalID)
	if err != nil {
		return err
	}
	round := aof.NextRound(prevRound)
	if err := bridge.SetBridgeExternalID(ctx, aof.RoundExternalID, strconv.Itoa(int(round))); err != nil {
		return err
	}
	dp.SetRound(round)
	logger.Info("Restart round", "round", round)
	dp.ObserveApply(func(replaceAll bool, took time.Duration, err error) {
		op := metrics.OperationSync
		if replaceAll {
			op = metrics.OperationReplaceAll
		}
		metrics.FlowOperationDuration.WithLabelValues(op).Observe(took.Seconds())
		if err != nil {
			metrics.FlowOperationErrors.WithLabelValues(op).Inc()
		}
	})
	api, err := metrics.Listen(ctx, o.APIBindAddress)
	if err != nil {
		return err
	}

	// The node's gateway and tunnel, and the other nodes as they are now:
	// the first bundle then already routes to them (an agent restart does
	// not interrupt traffic between nodes).
	netCfg := nodenet.Config{PodCIDR: podCIDR, TunnelType: o.TunnelType, MTU: o.MTU}
	network, err := nodenet.Setup(ctx, bridge, netCfg)
	if err != nil {
		return err
	}
	if err := dp.SetNetwork(ctx, network); err != nil {
		return err
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	remotes, _ := nodecontroller.RemoteNodes(o.NodeName, podCIDR, nodePointers(nodes.Items))
	if err := syncRemoteNodes(ctx, dp, podCIDR, remotes); err != nil {
		return err
	}
	nodeController, err := nodecontroller.New(kube, o.NodeName, podCIDR, func(ctx context.Context, nodes []aof.RemoteNode) error {
		return syncRemoteNodes(ctx, dp, podCIDR, nodes)
	})
	if err != nil {
		return err
	}

	// The policy state last received from the controller, so the node
	// enforces it from the first flow even if the controller is down.
	dirty := make(chan struct{}, 1)
	cache, err := npcontroller.NewCache(ctx, o.StateDir, func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return err
	}
	if err := dp.SetPolicy(ctx, cache.Snapshot()); err != nil {
		return err
	}
	registerDebug, why := o.debugRoutes(&debug.Server{Datapath: dp, Dumper: ofClient,
		Trace: func(ctx context.Context, flow string, ctNext ...string) (string, error) {
			return ovsctl.Trace(ctx, o.OVSUnixctl, o.Bridge, flow, ctNext...)
		}})
	if why != "" {
		logger.Info("Not serving the debug API", "reason", why)
	}
	go func() {
		err := metrics.Serve(ctx, api, metrics.ServerConfig{
			Registry:    metrics.NewRegistry(logger, dp, ofClient),
			Ready:       func() error { return ready(dp, cache) },
			EnablePprof: o.EnablePprof,
			Register:    registerDebug,
		})
		if err != nil {
			logger.Error(err, "Serving the agent API failed")
		}
	}()

	// Pods already attached (agent restart) come back from OVSDB.
	alloc, err := ipam.New(podCIDR, []netip.Addr{network.GatewayIP}, filepath.Join(o.StateDir, "ipam.json"))
	if err != nil {
		return err
	}
	cni, err := cniserver.New(cniserver.Config{
		SocketPath: o.CNISocket,
		PodCIDR:    podCIDR,
		GatewayIP:  network.GatewayIP,
		MTU:        o.MTU,
		Bridge:     bridge,
		Datapath:   dp,
		Store:      interfacestore.NewStore(),
		IPAM:       alloc,
	})
	if err != nil {
		return err
	}
	if err := cni.Reconcile(ctx); err != nil {
		return fmt.Errorf("rebuilding pod interfaces from OVSDB: %w", err)
	}
	// One bundle replaces whatever flows a previous agent left.
	if err := dp.Start(ctx); err != nil {
		return fmt.Errorf("installing the initial flows: %w", err)
	}
	logger.Info("Datapath ready", "flows", dp.FlowCount())
	allowForwarding(ctx, bridge)
	// ovs-vswitchd keeps no flows across a restart: install them all again.
	// It also recreates the gateway's kernel interface, which loses its
	// address and routes.
	go ofClient.Watch(ctx, func(ctx context.Context) {
		restoreNodeNetwork(ctx, bridge, netCfg, dp)
		restoreFlows(ctx, dp)
		allowForwarding(ctx, bridge)
	})

	go func() {
		if err := npcontroller.Watch(ctx, o.watchConfig(kube), cache); err != nil {
			logger.Error(err, "Watching the controller failed")
		}
	}()
	go syncPolicy(ctx, dp, cache, dirty)
	go nodeController.Run(ctx)
	go collectGarbage(ctx, kube, o.NodeName, cni)

	return cni.Run(ctx)
}

// ready is the agent's readiness: its flows are installed and its policy
// state is in sync with the controller.
func ready(dp *datapath.Datapath, cache *npcontroller.Cache) error {
	switch {
	case !dp.Started():
		return errors.New("the datapath has not installed its flows yet")
	case !cache.Synced():
		return errors.New("the policy state is not in sync with the controller yet")
	}
	return nil
}

// syncPolicy realizes the cache's state whenever it changed, retrying with
// backoff while OVS refuses. It always applies the newest state.
func syncPolicy(ctx context.Context, dp *datapath.Datapath, cache *npcontroller.Cache, dirty <-chan struct{}) {
	logger := klog.FromContext(ctx)
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 8, Cap: 10 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-dirty:
		}
		received := time.Now()
		b := backoff
		for {
			start := time.Now()
			err := dp.SetPolicy(ctx, cache.Snapshot())
			if err == nil {
				metrics.PolicyRealizationDuration.Observe(time.Since(received).Seconds())
				logger.V(2).Info("Policy state realized", "duration", time.Since(start))
				break
			}
			logger.Error(err, "Realizing policy state failed; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.Step()):
			}
		}
	}
}

// restoreFlows re-installs the complete flow state after OVS lost it,
// retrying until it succeeds or ctx ends.
func restoreFlows(ctx context.Context, dp *datapath.Datapath) {
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 8, Cap: 5 * time.Second}
	for {
		err := dp.Resync(ctx)
		if err == nil {
			klog.FromContext(ctx).Info("Restored flows after reconnecting to OVS", "flows", dp.FlowCount())
			return
		}
		klog.FromContext(ctx).Error(err, "Restoring flows failed; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Step()):
		}
	}
}

// allowForwarding clears other_config:flow-restore-wait once the flows are
// installed. Whoever restarts ovs-vswitchd on an existing bridge sets it
// first (build/images/agent/palisade-start-ovs, the lab's RestartOVS), so
// the new ovs-vswitchd forwards nothing until the agent has installed the
// complete flow state again, after its own start or after reconnecting.
func allowForwarding(ctx context.Context, bridge *ovsconfig.Client) {
	cleared, err := bridge.ClearFlowRestoreWait(ctx)
	switch {
	case err != nil:
		klog.FromContext(ctx).Error(err, "Clearing flow-restore-wait failed; OVS may not forward until it is cleared")
	case cleared:
		klog.FromContext(ctx).Info("Cleared flow-restore-wait: OVS forwards with the installed flows")
	}
}

// mtuFromNode is the pods' MTU: the MTU of the interface holding the node's
// InternalIP, less the tunnel's overhead.
func mtuFromNode(n *corev1.Node) (int, error) {
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil || !ip.Is4() {
			continue
		}
		uplink, err := nodenet.UplinkMTU(ip)
		if err != nil {
			return 0, err
		}
		return nodenet.PodMTU(uplink)
	}
	return 0, fmt.Errorf("node %s has no IPv4 InternalIP", n.Name)
}

func waitForPodCIDR(ctx context.Context, kube kubernetes.Interface, node string) (*corev1.Node, netip.Prefix, error) {
	var cidr netip.Prefix
	var found *corev1.Node
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			klog.FromContext(ctx).Info("Waiting for the Node object", "node", node, "err", err)
			return false, nil
		}
		if n.Spec.PodCIDR == "" {
			klog.FromContext(ctx).Info("Waiting for the Node's podCIDR", "node", node)
			return false, nil
		}
		cidr, err = netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			return false, fmt.Errorf("node %s has an invalid podCIDR %q: %w", node, n.Spec.PodCIDR, err)
		}
		found = n
		return true, nil
	})
	return found, cidr, err
}

// Garbage collection of attachments whose pods were deleted without a CNI
// DEL: checked every gcPeriod, collected once missing for gcGrace.
const (
	gcPeriod = 30 * time.Second
	gcGrace  = time.Minute
)

// collectGarbage runs the CNI server's garbage collection against the pods
// bound to this node, from an informer, until ctx is done.
func collectGarbage(ctx context.Context, kube kubernetes.Interface, node string, cni *cniserver.Server) {
	logger := klog.FromContext(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}))
	pods := factory.Core().V1().Pods()
	lister, synced := pods.Lister(), pods.Informer().HasSynced
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), synced) {
		return
	}
	exists := func(namespace, name string) bool {
		_, err := lister.Pods(namespace).Get(name)
		return err == nil
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if _, err := cni.GarbageCollect(ctx, exists, gcGrace); err != nil {
			logger.Error(err, "Garbage collection of deleted pods' attachments failed; retrying later")
		}
	}, gcPeriod)
}

// restoreNodeNetwork sets the gateway and tunnel up again after
// ovs-vswitchd restarted, and the routes to the remote nodes' pods.
func restoreNodeNetwork(ctx context.Context, bridge *ovsconfig.Client, cfg nodenet.Config, dp *datapath.Datapath) {
	logger := klog.FromContext(ctx)
	network, err := nodenet.Setup(ctx, bridge, cfg)
	if err == nil {
		err = dp.SetNetwork(ctx, network)
	}
	if err == nil {
		err = nodenet.SyncRoutes(ctx, nodenet.DefaultGatewayName, cfg.PodCIDR, dp.RemoteNodes())
	}
	if err != nil {
		logger.Error(err, "Restoring the node network after an OVS restart failed")
	}
}

// syncRemoteNodes realizes the remote nodes: their flows, then the node's
// routes to their pod CIDRs.
func syncRemoteNodes(ctx context.Context, dp *datapath.Datapath, local netip.Prefix, nodes []aof.RemoteNode) error {
	if err := dp.SetRemoteNodes(ctx, nodes); err != nil {
		return err
	}
	return nodenet.SyncRoutes(ctx, nodenet.DefaultGatewayName, local, nodes)
}

func nodePointers(items []corev1.Node) []*corev1.Node {
	out := make([]*corev1.Node, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

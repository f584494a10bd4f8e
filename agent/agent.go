// Package agent wires one node's agent together: the OVS bridge, the
// datapath reconciler, the CNI server and the policy watch from the
// controller.
package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/cniserver"
	npcontroller "palisade.dev/palisade/agent/controller/networkpolicy"
	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/ipam"
	aof "palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/ovs/openflow"
	"palisade.dev/palisade/ovs/ovsconfig"
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
	podCIDR, err := waitForPodCIDR(ctx, kube, o.NodeName)
	if err != nil {
		return err
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
	dp := datapath.New(ofClient)

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

	// Pods already attached (agent restart) come back from OVSDB.
	alloc, err := ipam.New(podCIDR, []netip.Addr{gatewayIP(podCIDR)}, filepath.Join(o.StateDir, "ipam.json"))
	if err != nil {
		return err
	}
	cni, err := cniserver.New(cniserver.Config{
		SocketPath: o.CNISocket,
		PodCIDR:    podCIDR,
		GatewayIP:  gatewayIP(podCIDR),
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
	logger.Info("Datapath ready", "flows", len(dp.Flows()))
	// ovs-vswitchd keeps no flows across a restart: install them all again.
	go ofClient.Watch(ctx, func(ctx context.Context) { restoreFlows(ctx, dp) })

	go func() {
		if err := npcontroller.Watch(ctx, o.ControllerURL, o.NodeName, cache); err != nil {
			logger.Error(err, "Watching the controller failed")
		}
	}()
	go syncPolicy(ctx, dp, cache, dirty)

	return cni.Run(ctx)
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
		b := backoff
		for {
			start := time.Now()
			err := dp.SetPolicy(ctx, cache.Snapshot())
			if err == nil {
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
			klog.FromContext(ctx).Info("Restored flows after reconnecting to OVS", "flows", len(dp.Flows()))
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

func waitForPodCIDR(ctx context.Context, kube kubernetes.Interface, node string) (netip.Prefix, error) {
	var cidr netip.Prefix
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
		return true, nil
	})
	return cidr, err
}

// gatewayIP is the first host address of the pod CIDR, reserved for the
// node's gateway.
func gatewayIP(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

//go:build integration

package nodenet

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/ovs/ovsconfig"
	"palisade.dev/palisade/test/lab/nsexec"
	"palisade.dev/palisade/test/netnstest"
	"palisade.dev/palisade/test/ovsinstance"
)

// TestSetupAndRoutes runs the node network setup against a real OVS in its
// own network namespace, as the agent does in a lab node.
func TestSetupAndRoutes(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ns := netnstest.New(t, "paltest-nn-")
	dir, err := os.MkdirTemp("", "nn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Netns: ns})
	if err != nil {
		t.Fatalf("start OVS: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("stop OVS: %v", err)
		}
	})
	bridge, err := ovsconfig.New(ctx, inst.DBEndpoint, "br-int", "netdev")
	if err != nil {
		t.Fatal(err)
	}
	defer bridge.Close()
	if err := bridge.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	nsPath := filepath.Join("/var/run/netns", ns)
	cfg := Config{PodCIDR: netip.MustParsePrefix("198.19.7.0/24"), TunnelType: TunnelGeneve, MTU: 1450}

	var first, again *openflow.NodeNetwork
	if err := nsexec.Do(nsPath, func() error {
		var err error
		if first, err = Setup(ctx, bridge, cfg); err != nil {
			return err
		}
		again, err = Setup(ctx, bridge, cfg)
		return err
	}); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if diff := cmp.Diff(first, again, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Fatalf("a second Setup changed the network (-first +again):\n%s", diff)
	}
	if first.GatewayIP != netip.MustParseAddr("198.19.7.1") || first.GatewayMAC.String() != "0a:58:c6:13:07:01" ||
		first.GatewayPort == 0 || first.TunnelPort == 0 {
		t.Fatalf("network = %+v", first)
	}
	link := netnstest.Run(t, "ip", "-n", ns, "-o", "addr", "show", "dev", DefaultGatewayName)
	if !strings.Contains(link, "inet 198.19.7.1/24") {
		t.Errorf("gateway addresses:\n%s", link)
	}
	if l := netnstest.Run(t, "ip", "-n", ns, "link", "show", DefaultGatewayName); !strings.Contains(l, "mtu 1450") || !strings.Contains(l, "0a:58:c6:13:07:01") || !strings.Contains(l, "UP") {
		t.Errorf("gateway link:\n%s", l)
	}
	if r := netnstest.Run(t, "ip", "-n", ns, "route"); !strings.Contains(r, "198.19.7.0/24 dev "+DefaultGatewayName) {
		t.Errorf("no route to the pod CIDR through the gateway:\n%s", r)
	}
	tun, err := inst.Vsctl("--columns=type,options", "list", "interface", DefaultTunnelName)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tun, "geneve") || !strings.Contains(tun, `remote_ip=flow`) || !strings.Contains(tun, `key=flow`) {
		t.Errorf("tunnel interface:\n%s", tun)
	}

	// Routes follow the remote nodes.
	node := func(i byte) openflow.RemoteNode {
		return openflow.RemoteNode{Name: "n", IP: netip.AddrFrom4([4]byte{198, 18, 0, 10 + i}), PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, i, 0}), 24)}
	}
	sync := func(nodes ...openflow.RemoteNode) {
		t.Helper()
		if err := nsexec.Do(nsPath, func() error { return SyncRoutes(ctx, "", cfg.PodCIDR, nodes) }); err != nil {
			t.Fatalf("SyncRoutes: %v", err)
		}
	}
	sync(node(2), node(3), node(7)) // node 7's CIDR is this node's: ignored
	routes, neigh := netnstest.Run(t, "ip", "-n", ns, "route"), netnstest.Run(t, "ip", "-n", ns, "neigh")
	for _, want := range []string{"198.19.2.0/24 via 198.19.2.1 dev palisade-gw0 onlink", "198.19.3.0/24 via 198.19.3.1 dev palisade-gw0 onlink"} {
		if !strings.Contains(routes, want) {
			t.Errorf("missing route %q:\n%s", want, routes)
		}
	}
	for _, want := range []string{"198.19.2.1 dev palisade-gw0 lladdr 0a:50:41:4c:49:53 PERMANENT", "198.19.3.1 dev palisade-gw0 lladdr 0a:50:41:4c:49:53 PERMANENT"} {
		if !strings.Contains(neigh, want) {
			t.Errorf("missing neighbor %q:\n%s", want, neigh)
		}
	}
	sync(node(3))
	routes, neigh = netnstest.Run(t, "ip", "-n", ns, "route"), netnstest.Run(t, "ip", "-n", ns, "neigh")
	if strings.Contains(routes, "198.19.2.0/24") || strings.Contains(neigh, "198.19.2.1 ") || !strings.Contains(routes, "198.19.3.0/24") {
		t.Errorf("after node 2 left:\nroutes:\n%s\nneighbors:\n%s", routes, neigh)
	}
	sync()
	if routes := netnstest.Run(t, "ip", "-n", ns, "route"); strings.Contains(routes, "via") {
		t.Errorf("routes left without remote nodes:\n%s", routes)
	}

	// A bad configuration is refused before anything is touched.
	for _, bad := range []Config{
		{PodCIDR: cfg.PodCIDR, TunnelType: "gre", MTU: 1450},
		{PodCIDR: netip.MustParsePrefix("198.19.7.0/31"), TunnelType: TunnelGeneve, MTU: 1450},
		{PodCIDR: cfg.PodCIDR, TunnelType: TunnelVXLAN, MTU: 100},
	} {
		if _, err := Setup(ctx, bridge, bad); err == nil {
			t.Errorf("Setup(%+v) succeeded", bad)
		}
	}
}

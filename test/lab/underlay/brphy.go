package underlay

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	"palisade.dev/palisade/test/lab/layout"
)

// Vsctl runs ovs-vsctl against a node's OVS (ovsinstance.Instance.Vsctl).
type Vsctl func(args ...string) (string, error)

// MoveToOVS makes node i's underlay go through its Open vSwitch, as the
// userspace datapath's native tunneling needs: eth0 becomes a port of the
// netdev bridge layout.PhysBridge, and the node's address moves from eth0
// to that bridge's internal interface. The tunnel ports of the
// integration bridge then find their route and ARP through it. Run it
// after the node's OVS started and before anything in the node needs the
// network; it is idempotent.
func MoveToOVS(ctx context.Context, i int, vsctl Vsctl) error {
	br := layout.PhysBridge
	if _, err := vsctl("--may-exist", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
		"--", "--may-exist", "add-port", br, layout.NodeIfName); err != nil {
		return fmt.Errorf("bridge %s with port %s: %w", br, layout.NodeIfName, err)
	}
	ns := layout.NodeNetns(i)
	cidr := netip.PrefixFrom(layout.NodeIP(i), layout.UnderlayPrefixLen).String()
	for _, args := range [][]string{
		{"ip", "-n", ns, "addr", "flush", "dev", layout.NodeIfName},
		{"ip", "-n", ns, "addr", "replace", cidr, "dev", br},
		{"ip", "-n", ns, "link", "set", br, "mtu", strconv.Itoa(layout.UnderlayMTU), "up"},
		// Like every interface the userspace datapath touches.
		{"ip", "netns", "exec", ns, "ethtool", "-K", br, "tx", "off"},
	} {
		if err := run(ctx, args[0], args[1:]...); err != nil {
			return err
		}
	}
	return nil
}

package nodenet

import (
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// TunnelOverhead is what encapsulation adds to a pod's packet on the
// underlay: outer Ethernet (14), IPv4 (20), UDP (8) and the Geneve or VXLAN
// header (8), without Geneve options.
const TunnelOverhead = 50

// UplinkMTU returns the MTU of the interface (in the current network
// namespace) that holds addr, the node's transport address.
func UplinkMTU(addr netip.Addr) (int, error) {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return 0, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return 0, fmt.Errorf("the interface holding %s: %w", addr, err)
		}
		return link.Attrs().MTU, nil
	}
	return 0, fmt.Errorf("no interface holds the node address %s", addr)
}

// PodMTU is the pods' MTU on a node whose uplink has uplinkMTU: room is left
// for the tunnel's encapsulation.
func PodMTU(uplinkMTU int) (int, error) {
	mtu := uplinkMTU - TunnelOverhead
	if mtu < 576 {
		return 0, fmt.Errorf("the uplink MTU %d leaves %d for pods after the tunnel's %d bytes; at least 576 are needed", uplinkMTU, mtu, TunnelOverhead)
	}
	return mtu, nil
}

package openflow

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"palisade.dev/palisade/agent/interfacestore"
	of "palisade.dev/palisade/ovs/openflow"
)

// NodeNetwork is how this node's bridge reaches beyond its pods: the
// gateway port (an internal port holding the first address of the pod
// CIDR, the node's side of every pod's default route) and the flow-based
// tunnel port to the other nodes.
type NodeNetwork struct {
	PodCIDR     netip.Prefix
	GatewayPort uint32
	GatewayIP   netip.Addr
	GatewayMAC  net.HardwareAddr
	// TunnelPort is the ofport of the tunnel (options:remote_ip=flow); 0
	// means no tunnel, so no remote node is reachable.
	TunnelPort uint32
}

// Validate reports a NodeNetwork the flows cannot be built from.
func (n *NodeNetwork) Validate() error {
	switch {
	case !n.PodCIDR.IsValid() || !n.PodCIDR.Addr().Is4():
		return fmt.Errorf("pod CIDR %s is not an IPv4 prefix", n.PodCIDR)
	case n.GatewayPort == 0:
		return fmt.Errorf("gateway port is not set")
	case !n.PodCIDR.Contains(n.GatewayIP):
		return fmt.Errorf("gateway IP %s is not in pod CIDR %s", n.GatewayIP, n.PodCIDR)
	case len(n.GatewayMAC) != 6:
		return fmt.Errorf("gateway MAC %q is not a MAC address", n.GatewayMAC)
	case n.TunnelPort == n.GatewayPort:
		return fmt.Errorf("gateway and tunnel share port %d", n.TunnelPort)
	}
	return nil
}

// VirtualMAC stands for "the other side of the tunnel": the node's routes
// to remote pod CIDRs resolve their next hop to it, and packets from the
// tunnel to the gateway carry it as their source.
var VirtualMAC = net.HardwareAddr{0x0a, 0x50, 0x41, 0x4c, 0x49, 0x53}

// GatewayMAC is the MAC address of the gateway that holds ip: fixed, so
// that pods' ARP caches stay valid when OVS recreates the interface.
func GatewayMAC(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, a[0], a[1], a[2], a[3]}
}

// RemoteNode is another node of the cluster: its pods, in PodCIDR, are
// reached through the tunnel to its transport address IP.
type RemoteNode struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
}

func (r RemoteNode) cookie() uint64 {
	a := r.IP.As4()
	return CookieNode | uint64(binary.BigEndian.Uint32(a[:]))
}

// SortRemoteNodes orders nodes by name, the order their flows are rendered in.
func SortRemoteNodes(nodes []RemoteNode) {
	slices.SortFunc(nodes, func(a, b RemoteNode) int { return cmp.Compare(a.Name, b.Name) })
}

// Priorities of the routing flows, relative to the pipeline's.
const (
	priorityToTunnel    = priorityARP + 10    // L2Forwarding: routed to the tunnel, whatever the MAC
	priorityTunnelDrop  = priorityNormal - 10 // L3Forwarding: tunnel traffic not for a local pod
	priorityRemoteCIDRs = priorityNormal - 20 // L3Forwarding: to a remote node's pods
)

func sourceIs(src uint32) of.RegMatch {
	return of.RegMatch{Reg: regSource, Value: src, Mask: sourceMask}
}

// NetworkFlows attach the node's gateway and tunnel to the pipeline:
//
//   - Classifier marks packets from the gateway (reg0=2) and the tunnel
//     (reg0=3). SpoofGuard lets every packet of the gateway through (it is
//     the node itself), and from the tunnel only packets whose outer source
//     is a known node and whose inner source is in that node's pod CIDR: a
//     pod's spoofed packet was dropped on its own node, and nobody else can
//     send into the pod network through the tunnel.
//   - L3Forwarding routes: a packet to a remote node's pod CIDR gets that
//     node's address as tun_dst and the to-tunnel mark (reg0[4]); a packet
//     from the tunnel to a local pod gets the gateway's and the pod's MACs,
//     one to the gateway's IP VirtualMAC and the gateway's MAC; any other
//     packet from the tunnel is dropped (no transit between nodes).
//     Each node on the way decrements the TTL. The pod IPs are never
//     translated, so the receiving node's ingress rules see the true source.
//   - L2Forwarding sends marked packets to the tunnel, packets to the
//     gateway's MAC and ARP for the gateway's IP to the gateway, whose
//     kernel interface answers the pods' ARP requests itself.
//   - IngressRule accepts new connections from the node itself (from the
//     gateway port with the gateway's IP as source, as kubelet's probes
//     are) before any policy: the node always reaches its pods.
func NetworkFlows(n *NodeNetwork, pods map[string]interfacestore.PodInterface, remotes []RemoteNode) []of.Flow {
	if n == nil {
		return nil
	}
	gw := n.GatewayPort
	cg := CookieNetwork | uint64(gw)
	flows := []of.Flow{
		{Table: ClassifierTable, Priority: priorityNormal, Cookie: cg, Match: of.Match{InPort: gw},
			Actions: []of.Action{of.LoadReg{Reg: regSource, Start: 0, End: 3, Value: sourceGateway}, gotoTable(SpoofGuardTable)}},
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: cg, Match: of.Match{Protocol: of.ProtoIP, InPort: gw},
			Actions: []of.Action{gotoTable(L3ForwardingTable)}},
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: cg, Match: of.Match{Protocol: of.ProtoARP, InPort: gw},
			Actions: []of.Action{gotoTable(L2ForwardingTable)}},
		{Table: L2ForwardingTable, Priority: priorityARP, Cookie: cg, Match: of.Match{Protocol: of.ProtoARP, ARPTpa: n.GatewayIP},
			Actions: []of.Action{of.LoadReg{Reg: regOutPort, Start: 0, End: 31, Value: gw}, gotoTable(IngressRuleTable)}},
		{Table: L2ForwardingTable, Priority: priorityNormal, Cookie: cg, Match: of.Match{EthDst: n.GatewayMAC},
			Actions: []of.Action{of.LoadReg{Reg: regOutPort, Start: 0, End: 31, Value: gw}, gotoTable(IngressRuleTable)}},
		{Table: IngressRuleTable, Priority: priorityNodeTraffic, Cookie: cg,
			Match:   of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{sourceIs(sourceGateway)}, IPSrc: netip.PrefixFrom(n.GatewayIP, 32)},
			Actions: []of.Action{gotoTable(ConntrackCommitTable)}},
	}
	if n.TunnelPort == 0 {
		return flows
	}
	tun := n.TunnelPort
	ct := CookieNetwork | uint64(tun)
	flows = append(flows,
		of.Flow{Table: ClassifierTable, Priority: priorityNormal, Cookie: ct, Match: of.Match{InPort: tun},
			Actions: []of.Action{of.LoadReg{Reg: regSource, Start: 0, End: 3, Value: sourceTunnel}, gotoTable(SpoofGuardTable)}},
		// Tunnel traffic only ever goes to a local pod (flows below, one per pod).
		of.Flow{Table: L3ForwardingTable, Priority: priorityTunnelDrop, Cookie: ct,
			Match: of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{sourceIs(sourceTunnel)}}},
		of.Flow{Table: L2ForwardingTable, Priority: priorityToTunnel, Cookie: ct,
			Match:   of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{{Reg: regSource, Value: 1 << toTunnelBit, Mask: 1 << toTunnelBit}}},
			Actions: []of.Action{of.LoadReg{Reg: regOutPort, Start: 0, End: 31, Value: tun}, gotoTable(IngressRuleTable)}},
	)
	keys := make([]string, 0, len(pods))
	for k := range pods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := pods[k]
		if p.OFPort <= 0 || !p.IP.Is4() || len(p.MAC) != 6 {
			continue
		}
		flows = append(flows, of.Flow{Table: L3ForwardingTable, Priority: priorityNormal, Cookie: CookiePod | uint64(p.OFPort),
			Match: of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{sourceIs(sourceTunnel)}, IPDst: netip.PrefixFrom(p.IP, 32)},
			Actions: []of.Action{of.SetEthSrc{MAC: n.GatewayMAC}, of.SetEthDst{MAC: p.MAC}, of.DecTTL{},
				gotoTable(ConntrackTable)}})
	}
	// Remote nodes reach this node's gateway too (the node's routes to
	// remote pods go through the tunnel with the gateway IP as source).
	flows = append(flows, of.Flow{Table: L3ForwardingTable, Priority: priorityNormal, Cookie: ct,
		Match: of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{sourceIs(sourceTunnel)}, IPDst: netip.PrefixFrom(n.GatewayIP, 32)},
		Actions: []of.Action{of.SetEthSrc{MAC: VirtualMAC}, of.SetEthDst{MAC: n.GatewayMAC}, of.DecTTL{},
			gotoTable(ConntrackTable)}})
	for _, r := range remotes {
		if !r.IP.Is4() || !r.PodCIDR.IsValid() || !r.PodCIDR.Addr().Is4() || r.PodCIDR.Overlaps(n.PodCIDR) {
			continue // the node controller only passes valid nodes
		}
		c := r.cookie()
		cidr := r.PodCIDR.Masked()
		flows = append(flows,
			of.Flow{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: c,
				Match:   of.Match{Protocol: of.ProtoIP, InPort: tun, TunSrc: r.IP, IPSrc: cidr},
				Actions: []of.Action{gotoTable(L3ForwardingTable)}},
			of.Flow{Table: L3ForwardingTable, Priority: priorityRemoteCIDRs, Cookie: c,
				Match: of.Match{Protocol: of.ProtoIP, IPDst: cidr},
				Actions: []of.Action{of.DecTTL{}, of.SetTunDst{IP: r.IP},
					of.LoadReg{Reg: regSource, Start: toTunnelBit, End: toTunnelBit, Value: 1},
					gotoTable(ConntrackTable)}},
		)
	}
	return flows
}

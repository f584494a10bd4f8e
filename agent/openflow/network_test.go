package openflow

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// The test node: pod CIDR 198.19.0.0/24, gateway on port 1, tunnel on port
// 5, pods x/a, x/b, x/c on ports 2..4; two remote nodes.
var (
	gwMAC   = net.HardwareAddr{0x0a, 0x58, 198, 19, 0, 1}
	network = &NodeNetwork{
		PodCIDR: netip.MustParsePrefix("198.19.0.0/24"), GatewayPort: 1,
		GatewayIP: netip.MustParseAddr("198.19.0.1"), GatewayMAC: gwMAC, TunnelPort: 5,
	}
	node2   = RemoteNode{Name: "node2", IP: netip.MustParseAddr("198.18.0.12"), PodCIDR: netip.MustParsePrefix("198.19.1.0/24")}
	node3   = RemoteNode{Name: "node3", IP: netip.MustParseAddr("198.18.0.13"), PodCIDR: netip.MustParsePrefix("198.19.2.0/24")}
	remotes = []RemoteNode{node2, node3}
	// remotePod is a pod on node2.
	remotePod = netip.MustParseAddr("198.19.1.5")
)

func TestRenderNetworkGolden(t *testing.T) {
	flows := mustRender(t, State{Pods: pods(podA, podB, podC), Policy: skeletonPolicy(), Network: network, RemoteNodes: remotes}, counter())
	golden(t, "network.flows", renderText(flows))
}

func TestNetworkValidate(t *testing.T) {
	valid := *network
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid network: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(n *NodeNetwork)
		want   string
	}{
		{"no CIDR", func(n *NodeNetwork) { n.PodCIDR = netip.Prefix{} }, "not an IPv4 prefix"},
		{"no gateway port", func(n *NodeNetwork) { n.GatewayPort = 0 }, "gateway port"},
		{"gateway outside CIDR", func(n *NodeNetwork) { n.GatewayIP = netip.MustParseAddr("198.19.9.1") }, "not in pod CIDR"},
		{"bad MAC", func(n *NodeNetwork) { n.GatewayMAC = nil }, "not a MAC"},
		{"shared port", func(n *NodeNetwork) { n.TunnelPort = 1 }, "share port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := *network
			tc.change(&n)
			if err := n.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// fromTunnel is a packet from a remote pod, as it arrives from node src.
func fromTunnel(src netip.Addr, from netip.Addr, to netip.Addr, port uint16) packet {
	return packet{InPort: 5, TunSrc: src, Proto: of.ProtoTCP,
		EthSrc: net.HardwareAddr{0x0a, 0x58, 198, 19, 1, 1}, EthDst: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1},
		Src: from, Dst: to, TpDst: port, CtResult: of.CtNew}
}

// fromGateway is a packet the node itself sends to a local pod.
func fromGateway(src netip.Addr, to netip.Addr, toMAC net.HardwareAddr, port uint16) packet {
	return packet{InPort: 1, Proto: of.ProtoTCP, EthSrc: gwMAC, EthDst: toMAC, Src: src, Dst: to, TpDst: port, CtResult: of.CtNew}
}

func TestTraceNetwork(t *testing.T) {
	allPods := pods(podA, podB, podC)
	// x/b is isolated for ingress and accepts TCP 80 from the remote pod only.
	fromRemote := skeletonPolicy()
	fromRemote.AddressGroups["ag-a"].Members = []cp.GroupMember{{Pod: cp.PodReference{Namespace: "y", Name: "r"}, IPs: []string{remotePod.String()}}}
	denyAll := skeletonPolicy()
	denyAll.Policies["uid-1"].Rules = nil

	toRemote := tcp(podA, podB, 80)
	toRemote.EthDst, toRemote.Dst = gwMAC, remotePod
	toNode := tcp(podA, podB, 22)
	toNode.EthDst, toNode.Dst = gwMAC, netip.MustParseAddr("198.18.0.11")
	toUnknown := tcp(podA, podB, 80)
	toUnknown.EthDst, toUnknown.Dst = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}, netip.MustParseAddr("198.19.9.9")
	spoofedToRemote := toRemote
	spoofedToRemote.Src = netip.MustParseAddr("198.19.1.9")
	arp := func(p packet) packet { p.Proto, p.TpDst, p.CtResult = of.ProtoARP, 0, 0; return p }
	arpToGateway := arp(tcp(podA, podB, 0))
	arpToGateway.Dst, arpToGateway.EthDst = network.GatewayIP, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	arpFromGateway := arp(fromGateway(network.GatewayIP, podC.IP, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0))

	tests := []struct {
		name   string
		policy *cp.NodeState
		pkt    packet
		want   string
		tunDst netip.Addr
		// ethDst, if set, is the destination MAC the packet leaves with.
		ethDst net.HardwareAddr
	}{
		{name: "pod to a remote pod goes through the tunnel to its node", pkt: toRemote, want: "output:5", tunDst: node2.IP, ethDst: gwMAC},
		{name: "spoofed source to a remote pod", pkt: spoofedToRemote, want: "drop"},
		{name: "remote pod to a local pod", pkt: fromTunnel(node2.IP, remotePod, podB.IP, 80), want: "output:3", ethDst: podB.MAC},
		{name: "ingress rule sees the remote pod's IP", policy: fromRemote, pkt: fromTunnel(node2.IP, remotePod, podB.IP, 80), want: "output:3"},
		{name: "ingress rule drops another remote pod", policy: fromRemote, pkt: fromTunnel(node2.IP, netip.MustParseAddr("198.19.1.6"), podB.IP, 80), want: "drop"},
		{name: "tunnel packet with a source outside its node's pod CIDR", pkt: fromTunnel(node2.IP, netip.MustParseAddr("198.19.2.5"), podB.IP, 80), want: "drop"},
		{name: "tunnel packet from an unknown node", pkt: fromTunnel(netip.MustParseAddr("198.18.0.99"), remotePod, podB.IP, 80), want: "drop"},
		{name: "tunnel packet for a remote node is not forwarded", pkt: fromTunnel(node2.IP, remotePod, netip.MustParseAddr("198.19.2.7"), 80), want: "drop"},
		{name: "tunnel packet for the gateway", pkt: fromTunnel(node2.IP, remotePod, network.GatewayIP, 80), want: "output:1", ethDst: gwMAC},
		{name: "remote node to a local pod", pkt: fromTunnel(node2.IP, netip.MustParseAddr("198.19.1.1"), podC.IP, 80), want: "output:4", ethDst: podC.MAC},
		{name: "node reaches its pod under deny-all", policy: denyAll, pkt: fromGateway(network.GatewayIP, podB.IP, podB.MAC, 8080), want: "output:3"},
		{name: "other sources through the gateway obey policy", policy: denyAll, pkt: fromGateway(netip.MustParseAddr("198.18.0.1"), podB.IP, podB.MAC, 8080), want: "drop"},
		{name: "a pod cannot pass for the node", policy: denyAll, pkt: func() packet {
			p := tcp(podA, podB, 8080)
			p.Src = network.GatewayIP
			return p
		}(), want: "drop"},
		{name: "pod to its node", pkt: toNode, want: "output:1"},
		{name: "pod to an unknown address", pkt: toUnknown, want: "drop"},
		{name: "pod asks for the gateway's MAC", pkt: arpToGateway, want: "output:1"},
		{name: "node asks for a pod's MAC", pkt: arpFromGateway, want: "output:4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flows := mustRender(t, State{Pods: allPods, Policy: tc.policy, Network: network, RemoteNodes: remotes}, counter())
			v := newTracer(flows).trace(tc.pkt)
			if v.String() != tc.want {
				t.Fatalf("verdict %s, want %s; path %v\nflows:\n%s", v, tc.want, v.Path, renderText(flows))
			}
			if v.TunDst != tc.tunDst {
				t.Errorf("tun_dst %v, want %v", v.TunDst, tc.tunDst)
			}
			if tc.ethDst != nil && v.EthDst.String() != tc.ethDst.String() {
				t.Errorf("leaves with dl_dst %s, want %s", v.EthDst, tc.ethDst)
			}
			if v.Output != 0 && tc.pkt.Proto != of.ProtoARP && !v.Committed {
				t.Errorf("a new connection was forwarded without a conntrack commit")
			}
			if routed := v.TunDst.IsValid() || tc.pkt.InPort == network.TunnelPort; v.Output != 0 && routed && v.TTLDecrements != 1 {
				t.Errorf("a routed packet had its TTL decremented %d times, want 1", v.TTLDecrements)
			}
		})
	}
}

// A node that joins adds its flows; one that leaves takes them all along.
func TestRemoteNodeFlowsFollowNodes(t *testing.T) {
	render := func(rs ...RemoteNode) map[string]of.Flow {
		m := map[string]of.Flow{}
		for _, f := range mustRender(t, State{Pods: pods(podA), Network: network, RemoteNodes: rs}, counter()) {
			m[f.Key()] = f
		}
		return m
	}
	one, two := render(node2), render(node2, node3)
	var added []string
	for k, f := range two {
		if _, ok := one[k]; !ok {
			added = append(added, f.String())
			if f.Cookie != node3.cookie() {
				t.Errorf("flow added for node3 has cookie %#x, want %#x: %s", f.Cookie, node3.cookie(), f)
			}
		}
	}
	if len(added) != 2 {
		t.Errorf("node3 joining added %d flows, want 2 (spoof guard, route):\n%s", len(added), strings.Join(added, "\n"))
	}
	if got, want := len(render()), len(one)-2; got != want {
		t.Errorf("without remote nodes %d flows, want %d", got, want)
	}
	// A remote node whose pod CIDR overlaps this node's gets no flows.
	bad := RemoteNode{Name: "bad", IP: netip.MustParseAddr("198.18.0.14"), PodCIDR: netip.MustParsePrefix("198.19.0.0/16")}
	if got := len(render(node2, bad)); got != len(one) {
		t.Errorf("an overlapping remote node changed the flow count: %d, want %d", got, len(one))
	}
}

package openflow

import (
	"net/netip"

	"palisade.dev/palisade/agent/interfacestore"
	of "palisade.dev/palisade/ovs/openflow"
)

// PodFlows are the flows that attach one local pod to the pipeline: its port
// is classified, its packets must carry its own IP and MAC (IP and ARP), and
// packets to its MAC, and ARP packets for its IP, are forwarded to its port.
func PodFlows(p interfacestore.PodInterface) []of.Flow {
	port := uint32(p.OFPort)
	c := CookiePod | uint64(port)
	toPort := []of.Action{
		of.LoadReg{Reg: regOutPort, Start: 0, End: 31, Value: port},
		gotoTable(IngressRuleTable),
	}
	return []of.Flow{
		{Table: ClassifierTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{InPort: port},
			Actions: []of.Action{
				of.LoadReg{Reg: regSource, Start: 0, End: 3, Value: sourcePod},
				gotoTable(SpoofGuardTable),
			}},
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: c,
			Match:   of.Match{Protocol: of.ProtoIP, InPort: port, EthSrc: p.MAC, IPSrc: netip.PrefixFrom(p.IP, p.IP.BitLen())},
			Actions: []of.Action{gotoTable(L3ForwardingTable)}},
		// ARP skips conntrack and policy, so address resolution works
		// whatever the policies say; it is never flooded.
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: c,
			Match:   of.Match{Protocol: of.ProtoARP, InPort: port, EthSrc: p.MAC, ARPSpa: p.IP, ARPSha: p.MAC},
			Actions: []of.Action{gotoTable(L2ForwardingTable)}},
		{Table: L2ForwardingTable, Priority: priorityARP, Cookie: c,
			Match: of.Match{Protocol: of.ProtoARP, ARPTpa: p.IP}, Actions: toPort},
		{Table: L2ForwardingTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{EthDst: p.MAC}, Actions: toPort},
	}
}

package openflow

import (
	"net/netip"

	"palisade.dev/palisade/agent/interfacestore"
	of "palisade.dev/palisade/ovs/openflow"
)

// PodFlows are the flows that attach one local pod to the pipeline: its port
// is classified, its packets must carry its own IP and MAC (IP and ARP), and
// packets to its MAC are forwarded to its port.
func PodFlows(p interfacestore.PodInterface) []of.Flow {
	port := uint32(p.OFPort)
	c := CookiePod | uint64(port)
	return []of.Flow{
		{Table: ClassifierTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{InPort: port},
			Actions: []of.Action{
				of.LoadReg{Reg: regSource, Start: 0, End: 3, Value: sourcePod},
				gotoTable(SpoofGuardTable),
			}},
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: c,
			Match:   of.Match{Protocol: of.ProtoIP, InPort: port, EthSrc: p.MAC, IPSrc: netip.PrefixFrom(p.IP, p.IP.BitLen())},
			Actions: []of.Action{gotoTable(ConntrackTable)}},
		// ARP is switched by L2 learning once it passed the spoof guard, so
		// address resolution works whatever the policies say.
		{Table: SpoofGuardTable, Priority: priorityNormal, Cookie: c,
			Match:   of.Match{Protocol: of.ProtoARP, InPort: port, ARPSpa: p.IP, ARPSha: p.MAC},
			Actions: []of.Action{of.Normal{}}},
		{Table: L2ForwardingTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{EthDst: p.MAC},
			Actions: []of.Action{
				of.LoadReg{Reg: regOutPort, Start: 0, End: 31, Value: port},
				gotoTable(IngressRuleTable),
			}},
	}
}

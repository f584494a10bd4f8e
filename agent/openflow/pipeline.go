// Package openflow computes the agent's OpenFlow pipeline as values: pure
// functions from the node's pods and policy state to []openflow.Flow. It does
// not talk to OVS; agent/datapath applies what this package computes.
//
// The pipeline is documented with real flow dumps in docs/design/pipeline.md.
package openflow

import (
	"strconv"

	of "palisade.dev/palisade/ovs/openflow"
)

// The pipeline, in the order a packet walks it. Each table is declared once
// with its name; IDs follow the order (OpenFlow only jumps forward).
var (
	ClassifierTable      = of.Table{ID: 0, Name: "Classifier"}
	SpoofGuardTable      = of.Table{ID: 1, Name: "SpoofGuard"}
	L3ForwardingTable    = of.Table{ID: 2, Name: "L3Forwarding"} // routing between nodes (network.go)
	ConntrackTable       = of.Table{ID: 3, Name: "Conntrack"}
	ConntrackStateTable  = of.Table{ID: 4, Name: "ConntrackState"}
	EgressRuleTable      = of.Table{ID: 5, Name: "EgressRule"}
	EgressDefaultTable   = of.Table{ID: 6, Name: "EgressDefault"}
	EgressMetricTable    = of.Table{ID: 7, Name: "EgressMetric"} // rule statistics (metric.go)
	L2ForwardingTable    = of.Table{ID: 8, Name: "L2Forwarding"}
	IngressRuleTable     = of.Table{ID: 9, Name: "IngressRule"}
	IngressDefaultTable  = of.Table{ID: 10, Name: "IngressDefault"}
	IngressMetricTable   = of.Table{ID: 11, Name: "IngressMetric"}
	ConntrackCommitTable = of.Table{ID: 12, Name: "ConntrackCommit"}
	OutputTable          = of.Table{ID: 13, Name: "Output"}

	// Pipeline lists every table in order.
	Pipeline = []of.Table{
		ClassifierTable, SpoofGuardTable, L3ForwardingTable, ConntrackTable, ConntrackStateTable,
		EgressRuleTable, EgressDefaultTable, EgressMetricTable, L2ForwardingTable,
		IngressRuleTable, IngressDefaultTable, IngressMetricTable, ConntrackCommitTable, OutputTable,
	}
)

// TableNames maps table IDs to names, for OVSDB Flow_Table rows.
func TableNames() map[uint8]string {
	m := make(map[uint8]string, len(Pipeline))
	for _, t := range Pipeline {
		m[t.ID] = t.Name
	}
	return m
}

// CtZone is the conntrack zone of all pod traffic.
const CtZone uint16 = 65520

// Registers. reg0[0..3] marks where a packet came from (a local pod, the
// node's gateway, the tunnel) and reg0[4] that L3Forwarding routed it to
// the tunnel; reg1 holds the output port chosen by L2Forwarding; reg2 and
// reg3 hold the conjunction id of the egress and ingress rule that allowed a
// new connection (visible in traces). ConntrackCommit records both in the
// connection's label: ct_label[0..31] the egress rule, ct_label[32..63] the
// ingress rule, so the metric tables count a connection's later packets by
// the rules that allowed it.
const (
	regSource      = 0
	regOutPort     = 1
	regEgressRule  = 2
	regIngressRule = 3

	sourcePod     uint32 = 1
	sourceGateway uint32 = 2
	sourceTunnel  uint32 = 3
	sourceMask    uint32 = 0xf
	toTunnelBit          = 4
)

// Priorities.
const (
	priorityEstablished uint16 = 64990
	priorityNodeTraffic uint16 = 64900 // the node reaches its own pods whatever the policies
	priorityARP         uint16 = 210   // ARP is forwarded by its target address
	priorityNormal      uint16 = 200
	priorityRule        uint16 = 200
	priorityDefault     uint16 = 0
)

// Cookie layout: bits 56..63 the restart round, 48..55 the category, 0..47 the
// id of the owner (a conjunction id for policy flows, an ofport for pod
// flows). `ovs-ofctl dump-flows cookie=0x3000000000005/0xffffffffffff` lists
// the flows of one rule.
const (
	CookiePipeline uint64 = 1 << 48
	CookiePod      uint64 = 2 << 48
	CookiePolicy   uint64 = 3 << 48
	CookieIsolate  uint64 = 4 << 48
	CookieNetwork  uint64 = 5 << 48 // the gateway and tunnel ports; id: the ofport
	CookieNode     uint64 = 6 << 48 // a remote node; id: its IPv4 address
	CookieMetric   uint64 = 7 << 48 // a rule's counters; id: MetricKind<<32 | the conjunction id

	CookieCategoryMask uint64 = 0xff << 48
	CookieIDMask       uint64 = 1<<48 - 1
	CookieRoundShift          = 56
	CookieRoundMask    uint64 = 0xff << CookieRoundShift
)

// RoundExternalID is the bridge's external_ids key that keeps the agent's
// restart round: every agent start takes the next one (1..255, then 1
// again) and puts it in bits 56..63 of every cookie, so a flow says which
// agent run installed it.
const RoundExternalID = "palisade-round"

// NextRound is the round after prev (as stored in external_ids; "" or
// garbage start at 1).
func NextRound(prev string) uint8 {
	n, err := strconv.ParseUint(prev, 10, 8)
	if err != nil || n >= 255 {
		return 1
	}
	return uint8(n) + 1
}

// SetRound puts round into the cookie of every flow.
func SetRound(flows []of.Flow, round uint8) {
	for i := range flows {
		flows[i].Cookie = flows[i].Cookie&^CookieRoundMask | uint64(round)<<CookieRoundShift
	}
}

func gotoTable(t of.Table) of.Action { return of.GotoTable{Table: t} }

// PipelineFlows are the flows that exist whatever the pods and policies: the
// default of every table and the conntrack plumbing.
func PipelineFlows() []of.Flow {
	c := CookiePipeline
	ip := of.Match{Protocol: of.ProtoIP}
	established := of.Match{Protocol: of.ProtoIP, CtState: of.CtState{Set: of.CtTrk, Mask: of.CtNew | of.CtTrk}}
	ctTable := ConntrackStateTable
	return []of.Flow{
		// Unknown ports and spoofed packets are dropped (no actions).
		{Table: ClassifierTable, Priority: priorityDefault, Cookie: c},
		{Table: SpoofGuardTable, Priority: priorityDefault, Cookie: c},
		// Packets that are not routed keep their addresses.
		{Table: L3ForwardingTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(ConntrackTable)}},
		// Every IP packet goes through conntrack.
		{Table: ConntrackTable, Priority: priorityNormal, Cookie: c, Match: ip,
			Actions: []of.Action{of.CT{Zone: CtZone, Table: &ctTable}}},
		{Table: ConntrackTable, Priority: priorityDefault, Cookie: c},
		{Table: ConntrackStateTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{Protocol: of.ProtoIP, CtState: of.CtState{Set: of.CtInv | of.CtTrk, Mask: of.CtInv | of.CtTrk}}},
		{Table: ConntrackStateTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(EgressRuleTable)}},
		// Packets of established connections skip policy: they were allowed
		// when the connection was committed.
		// (through the metric table, which counts them by the rule that
		// allowed the connection).
		{Table: EgressRuleTable, Priority: priorityEstablished, Cookie: c, Match: established,
			Actions: []of.Action{gotoTable(EgressMetricTable)}},
		{Table: EgressRuleTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(EgressDefaultTable)}},
		{Table: EgressDefaultTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(EgressMetricTable)}},
		{Table: EgressMetricTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(L2ForwardingTable)}},
		{Table: L2ForwardingTable, Priority: priorityDefault, Cookie: c},
		{Table: IngressRuleTable, Priority: priorityEstablished, Cookie: c, Match: established,
			Actions: []of.Action{gotoTable(IngressMetricTable)}},
		{Table: IngressRuleTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(IngressDefaultTable)}},
		{Table: IngressDefaultTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(IngressMetricTable)}},
		{Table: IngressMetricTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(ConntrackCommitTable)}},
		// A new connection is committed only here, after both the source's
		// egress rules and the destination's ingress rules allowed it, with
		// the ids of both rules in its label.
		{Table: ConntrackCommitTable, Priority: priorityNormal, Cookie: c,
			Match: of.Match{Protocol: of.ProtoIP, CtState: of.CtState{Set: of.CtNew | of.CtTrk, Mask: of.CtNew | of.CtTrk}},
			Actions: []of.Action{of.CT{Commit: true, Zone: CtZone, Exec: []of.Action{
				of.Move{Src: of.RegField(regEgressRule), Dst: of.FieldCtLabel, DstOfs: ctLabelEgressOfs, NBits: 32},
				of.Move{Src: of.RegField(regIngressRule), Dst: of.FieldCtLabel, DstOfs: ctLabelIngressOfs, NBits: 32},
			}}, gotoTable(OutputTable)}},
		{Table: ConntrackCommitTable, Priority: priorityDefault, Cookie: c, Actions: []of.Action{gotoTable(OutputTable)}},
		{Table: OutputTable, Priority: priorityNormal, Cookie: c, Match: ip,
			Actions: []of.Action{of.OutputReg{Reg: regOutPort, Start: 0, End: 31}}},
		{Table: OutputTable, Priority: priorityNormal, Cookie: c, Match: of.Match{Protocol: of.ProtoARP},
			Actions: []of.Action{of.OutputReg{Reg: regOutPort, Start: 0, End: 31}}},
		{Table: OutputTable, Priority: priorityDefault, Cookie: c},
	}
}

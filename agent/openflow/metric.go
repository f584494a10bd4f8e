package openflow

import (
	"fmt"

	of "palisade.dev/palisade/ovs/openflow"
)

// Where ConntrackCommit records the ids of the rules that allowed a
// connection in its ct_label (bits 0..31 egress, 32..63 ingress).
const (
	ctLabelEgressOfs  uint16 = 0
	ctLabelIngressOfs uint16 = 32
)

// MetricKind says what a metric flow counts.
type MetricKind uint8

const (
	// MetricSessions counts the new connections a rule allowed (their
	// first packet).
	MetricSessions MetricKind = 1
	// MetricEstablished counts the packets and bytes, both directions, of
	// the connections a rule allowed, after their first packet.
	MetricEstablished MetricKind = 2
)

func (k MetricKind) String() string {
	switch k {
	case MetricSessions:
		return "sessions"
	case MetricEstablished:
		return "established"
	}
	return fmt.Sprintf("MetricKind(%d)", uint8(k))
}

// MetricCookie is the cookie of a rule's metric flow.
func MetricCookie(kind MetricKind, conjID uint32) uint64 {
	return CookieMetric | uint64(kind)<<32 | uint64(conjID)
}

// ParseMetricCookie returns what a metric flow's cookie counts and for
// which conjunction; ok is false for any other cookie.
func ParseMetricCookie(c uint64) (kind MetricKind, conjID uint32, ok bool) {
	if c&CookieCategoryMask != CookieMetric {
		return 0, 0, false
	}
	kind = MetricKind(c >> 32 & 0xff)
	if kind != MetricSessions && kind != MetricEstablished || c>>40&0xff != 0 {
		return 0, 0, false
	}
	return kind, uint32(c), true
}

// appendMetricFlows adds a rule's two counters to its direction's metric
// table: new connections the rule allowed (reg2/reg3 holds its id), and
// later packets of connections it allowed (the id in the ct_label). Both
// only count and continue: they never change a verdict.
func appendMetricFlows(flows []of.Flow, d direction, id uint32) []of.Flow {
	next := []of.Action{gotoTable(d.metricNext)}
	return append(flows,
		of.Flow{Table: d.metricTable, Priority: priorityRule, Cookie: MetricCookie(MetricSessions, id),
			Match: of.Match{Protocol: of.ProtoIP, CtState: of.CtState{Set: of.CtNew | of.CtTrk, Mask: of.CtNew | of.CtTrk},
				Regs: []of.RegMatch{{Reg: d.ruleReg, Value: id}}},
			Actions: next},
		of.Flow{Table: d.metricTable, Priority: priorityRule, Cookie: MetricCookie(MetricEstablished, id),
			Match: of.Match{Protocol: of.ProtoIP, CtState: of.CtState{Set: of.CtTrk, Mask: of.CtNew | of.CtTrk},
				CtLabel: of.CtLabelMatch{Value: uint64(id) << d.ctLabelOfs, Mask: 0xffffffff << d.ctLabelOfs}},
			Actions: next},
	)
}

// RuleRef names a policy rule for its statistics.
type RuleRef struct {
	// Namespace and Name are the source policy's.
	Namespace, Name string
	// Direction is "Ingress" or "Egress".
	Direction string
	// Index is the rule's position among the policy's rules.
	Index int
}

// RulesOf maps the conjunction ids of the realized policies' rules back to
// the rules. A rule split by named ports has several ids, all mapping to
// it.
func RulesOf(realized []Realization) map[uint32]RuleRef {
	out := map[uint32]RuleRef{}
	for _, r := range realized {
		for id, ref := range r.Rules {
			out[id] = ref
		}
	}
	return out
}

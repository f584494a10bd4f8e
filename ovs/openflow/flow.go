// Package openflow holds OpenFlow flows as plain values and installs them on an
// Open vSwitch bridge.
//
// A Flow is data: the agent's pipeline computes []Flow with pure functions, the
// flows render as ovs-ofctl text (String) for golden tests and debugging, and
// Client.Apply sends a set of changes to OVS in one OpenFlow 1.5 bundle. This
// package knows nothing of policies; it is the only place that speaks OpenFlow.
package openflow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Table is an OpenFlow table with its name. Names are written to OVSDB so that
// `ovs-ofctl --names` shows them.
type Table struct {
	ID   uint8
	Name string
}

func (t Table) String() string {
	if t.Name != "" {
		return t.Name
	}
	return fmt.Sprint(t.ID)
}

// Protocol selects the ethertype and IP protocol of a match.
type Protocol uint8

const (
	ProtoNone Protocol = iota
	ProtoIP
	ProtoARP
	ProtoTCP
	ProtoUDP
	ProtoSCTP
	ProtoICMP
)

var protoNames = [...]string{"", "ip", "arp", "tcp", "udp", "sctp", "icmp"}

func (p Protocol) String() string {
	if int(p) >= len(protoNames) {
		return fmt.Sprintf("Protocol(%d)", p)
	}
	return protoNames[p]
}

// CtState bits, as in ct_state.
const (
	CtNew uint32 = 1 << 0
	CtEst uint32 = 1 << 1
	CtRel uint32 = 1 << 2
	CtRpl uint32 = 1 << 3
	CtInv uint32 = 1 << 4
	CtTrk uint32 = 1 << 5
)

var ctStateNames = []struct {
	bit  uint32
	name string
}{{CtNew, "new"}, {CtEst, "est"}, {CtRel, "rel"}, {CtRpl, "rpl"}, {CtInv, "inv"}, {CtTrk, "trk"}}

// CtState matches conntrack state bits: bits in Mask must equal those in Set.
type CtState struct {
	Set, Mask uint32
}

func (c CtState) String() string {
	var b strings.Builder
	for _, s := range ctStateNames {
		if c.Mask&s.bit == 0 {
			continue
		}
		if c.Set&s.bit != 0 {
			b.WriteByte('+')
		} else {
			b.WriteByte('-')
		}
		b.WriteString(s.name)
	}
	return b.String()
}

// RegMatch matches bits of an NXM register (reg0..reg15). Mask 0 means the
// whole register.
type RegMatch struct {
	Reg   uint8
	Value uint32
	Mask  uint32
}

// Match is the match part of a flow. Zero values mean "any".
type Match struct {
	InPort   uint32
	Protocol Protocol
	Regs     []RegMatch
	CtState  CtState
	EthSrc   net.HardwareAddr
	EthDst   net.HardwareAddr
	IPSrc    netip.Prefix
	IPDst    netip.Prefix
	ARPSpa   netip.Addr
	ARPSha   net.HardwareAddr
	// ARPTpa matches the target protocol address of an ARP packet.
	ARPTpa netip.Addr
	// TpDst matches the L4 destination port when non-zero; TpDstMask, when
	// non-zero, makes it a masked match (used for port ranges).
	TpDst     uint16
	TpDstMask uint16
	// ConjID matches the conjunction id when non-zero.
	ConjID uint32
	// TunSrc matches the outer source IPv4 address of a packet that
	// arrived through a tunnel port.
	TunSrc netip.Addr
	// CtLabel matches bits of the connection's label.
	CtLabel CtLabelMatch
}

// CtLabelMatch matches the low 64 bits of the 128-bit ct_label: the bits in
// Mask must equal those in Value. A zero Mask does not match the label.
type CtLabelMatch struct {
	Value, Mask uint64
}

func appendPrefix(b []byte, p netip.Prefix) []byte {
	if p.IsSingleIP() {
		return p.Addr().AppendTo(b)
	}
	return p.Masked().AppendTo(b)
}

func appendHex(b []byte, v uint64) []byte {
	return strconv.AppendUint(append(b, "0x"...), v, 16)
}

// String renders the match in ovs-ofctl syntax, fields in a fixed order.
func (m Match) String() string {
	return string(m.AppendTo(make([]byte, 0, 64)))
}

// AppendTo appends String's text to b and returns the extended buffer. It
// builds the text without fmt: rendering a node's table formats every
// match, often more than once.
func (m Match) AppendTo(b []byte) []byte {
	start := len(b)
	field := func(name string) {
		if len(b) > start {
			b = append(b, ',')
		}
		b = append(b, name...)
	}
	if m.Protocol != ProtoNone {
		field(m.Protocol.String())
	}
	if m.InPort != 0 {
		field("in_port=")
		b = strconv.AppendUint(b, uint64(m.InPort), 10)
	}
	for _, r := range m.Regs {
		field("reg")
		b = strconv.AppendUint(b, uint64(r.Reg), 10)
		b = appendHex(append(b, '='), uint64(r.Value))
		if r.Mask != 0 && r.Mask != 0xffffffff {
			b = appendHex(append(b, '/'), uint64(r.Mask))
		}
	}
	if m.CtState.Mask != 0 {
		field("ct_state=")
		b = append(b, m.CtState.String()...)
	}
	if m.EthSrc != nil {
		field("dl_src=")
		b = append(b, m.EthSrc.String()...)
	}
	if m.EthDst != nil {
		field("dl_dst=")
		b = append(b, m.EthDst.String()...)
	}
	if m.IPSrc.IsValid() {
		field("nw_src=")
		b = appendPrefix(b, m.IPSrc)
	}
	if m.IPDst.IsValid() {
		field("nw_dst=")
		b = appendPrefix(b, m.IPDst)
	}
	if m.ARPSpa.IsValid() {
		field("arp_spa=")
		b = m.ARPSpa.AppendTo(b)
	}
	if m.ARPSha != nil {
		field("arp_sha=")
		b = append(b, m.ARPSha.String()...)
	}
	if m.ARPTpa.IsValid() {
		field("arp_tpa=")
		b = m.ARPTpa.AppendTo(b)
	}
	if m.TpDst != 0 {
		field("tp_dst=")
		if m.TpDstMask == 0 || m.TpDstMask == 0xffff {
			b = strconv.AppendUint(b, uint64(m.TpDst), 10)
		} else {
			b = appendHex(b, uint64(m.TpDst))
			b = appendHex(append(b, '/'), uint64(m.TpDstMask))
		}
	}
	if m.ConjID != 0 {
		field("conj_id=")
		b = strconv.AppendUint(b, uint64(m.ConjID), 10)
	}
	if m.TunSrc.IsValid() {
		field("tun_src=")
		b = m.TunSrc.AppendTo(b)
	}
	if m.CtLabel.Mask != 0 {
		field("ct_label=")
		b = appendHex(b, m.CtLabel.Value&m.CtLabel.Mask)
		b = appendHex(append(b, '/'), m.CtLabel.Mask)
	}
	return b
}

// Action is one OpenFlow action or instruction of a flow.
type Action interface {
	String() string
	isAction()
}

// Output sends the packet to a port.
type Output struct{ Port uint32 }

// OutputReg sends the packet to the port held in bits Start..End of a register.
type OutputReg struct{ Reg, Start, End uint8 }

// GotoTable continues the pipeline in another table (always the last action).
type GotoTable struct{ Table Table }

// Conjunction makes the flow one clause of a conjunctive match.
type Conjunction struct {
	ID               uint32
	Clause, NClauses uint8
}

// LoadReg writes Value into bits Start..End of a register.
type LoadReg struct {
	Reg        uint8
	Start, End uint8
	Value      uint32
}

// SetCtMark sets the conntrack mark; valid only inside CT.Exec.
type SetCtMark struct{ Value uint32 }

// CT sends the packet through conntrack in Zone. With Commit it commits the
// connection (running Exec); with a Table it continues there, tracked.
type CT struct {
	Commit bool
	Zone   uint16
	// Table is where the tracked packet continues; nil means it does not.
	Table *Table
	Exec  []Action
}

// Field names a packet field a Move reads or writes, in NXM syntax.
type Field string

// Fields a Move can use.
const (
	FieldCtLabel Field = "NXM_NX_CT_LABEL"
	FieldCtMark  Field = "NXM_NX_CT_MARK"
)

// RegField is register reg0..reg15 as a Move field.
func RegField(n uint8) Field { return Field(fmt.Sprintf("NXM_NX_REG%d", n)) }

// width is the field's size in bits, 0 for an unknown field.
func (f Field) width() uint16 {
	switch f {
	case FieldCtLabel:
		return 128
	case FieldCtMark:
		return 32
	}
	var n uint8
	if _, err := fmt.Sscanf(string(f), "NXM_NX_REG%d", &n); err == nil && n <= 15 && string(f) == string(RegField(n)) {
		return 32
	}
	return 0
}

// Move copies NBits bits from Src (starting at bit SrcOfs) to Dst (at bit
// DstOfs), ovs-ofctl's move (OpenFlow 1.5 copy_field). Inside CT.Exec it
// may write ct_label or ct_mark, and only there.
type Move struct {
	Src, Dst       Field
	SrcOfs, DstOfs uint16
	NBits          uint16
}

// Normal hands the packet to the switch's L2 learning.
type Normal struct{}

// SetEthSrc rewrites the source MAC address.
type SetEthSrc struct{ MAC net.HardwareAddr }

// SetEthDst rewrites the destination MAC address.
type SetEthDst struct{ MAC net.HardwareAddr }

// SetTunDst sets the outer destination IPv4 address for a packet that
// leaves through a flow-based tunnel port (options:remote_ip=flow).
type SetTunDst struct{ IP netip.Addr }

// DecTTL decrements the IPv4 TTL; a packet whose TTL runs out is dropped
// (OVS would send it to a controller, and the bridge has none).
type DecTTL struct{}

func (Output) isAction()      {}
func (OutputReg) isAction()   {}
func (GotoTable) isAction()   {}
func (Conjunction) isAction() {}
func (LoadReg) isAction()     {}
func (SetCtMark) isAction()   {}
func (CT) isAction()          {}
func (Normal) isAction()      {}
func (SetEthSrc) isAction()   {}
func (SetEthDst) isAction()   {}
func (SetTunDst) isAction()   {}
func (DecTTL) isAction()      {}
func (Move) isAction()        {}

func (a Output) String() string { return fmt.Sprintf("output:%d", a.Port) }
func (a OutputReg) String() string {
	return fmt.Sprintf("output:NXM_NX_REG%d[%d..%d]", a.Reg, a.Start, a.End)
}
func (a GotoTable) String() string { return "goto_table:" + a.Table.String() }
func (a Conjunction) String() string {
	return fmt.Sprintf("conjunction(%d,%d/%d)", a.ID, a.Clause, a.NClauses)
}
func (a LoadReg) String() string {
	return fmt.Sprintf("load:0x%x->NXM_NX_REG%d[%d..%d]", a.Value, a.Reg, a.Start, a.End)
}
func (a SetCtMark) String() string { return fmt.Sprintf("set_field:0x%x->ct_mark", a.Value) }
func (a CT) String() string {
	var args []string
	if a.Commit {
		args = append(args, "commit")
	}
	if a.Table != nil {
		args = append(args, "table="+a.Table.String())
	}
	args = append(args, fmt.Sprintf("zone=%d", a.Zone))
	if len(a.Exec) > 0 {
		args = append(args, "exec("+joinActions(a.Exec)+")")
	}
	return "ct(" + strings.Join(args, ",") + ")"
}
func (Normal) String() string      { return "NORMAL" }
func (a SetEthSrc) String() string { return fmt.Sprintf("set_field:%s->eth_src", a.MAC) }
func (a SetEthDst) String() string { return fmt.Sprintf("set_field:%s->eth_dst", a.MAC) }
func (a SetTunDst) String() string { return fmt.Sprintf("set_field:%s->tun_dst", a.IP) }
func (DecTTL) String() string      { return "dec_ttl" }
func (a Move) String() string {
	return fmt.Sprintf("move:%s[%d..%d]->%s[%d..%d]", a.Src, a.SrcOfs, a.SrcOfs+a.NBits-1, a.Dst, a.DstOfs, a.DstOfs+a.NBits-1)
}

func joinActions(as []Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// Flow is one OpenFlow flow entry. A flow with no actions drops.
type Flow struct {
	Table    Table
	Priority uint16
	Cookie   uint64
	Match    Match
	Actions  []Action
}

// Key identifies the flow entry in its bridge: OVS keeps one flow per table,
// priority and match.
func (f Flow) Key() string {
	b := make([]byte, 0, 96)
	b = strconv.AppendUint(append(b, "table="...), uint64(f.Table.ID), 10)
	b = strconv.AppendUint(append(b, ",priority="...), uint64(f.Priority), 10)
	return string(f.Match.AppendTo(append(b, ',')))
}

// ActionsString renders the actions in ovs-ofctl syntax.
func (f Flow) ActionsString() string {
	if len(f.Actions) == 0 {
		return "drop"
	}
	return joinActions(f.Actions)
}

// String renders the flow in the syntax `ovs-ofctl add-flow` accepts.
func (f Flow) String() string {
	m := f.Match.String()
	if m != "" {
		m = "," + m
	}
	return fmt.Sprintf("cookie=0x%x,table=%s,priority=%d%s actions=%s",
		f.Cookie, f.Table, f.Priority, m, f.ActionsString())
}

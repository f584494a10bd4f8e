package openflow

import (
	"fmt"
	"net"
	"net/netip"
	"sort"

	of "palisade.dev/palisade/ovs/openflow"
)

// packet is what the tracer walks through the flows. CtResult is the state
// conntrack reports when the packet is tracked (CtNew or CtEst; CtInv). For
// ARP, Src and Dst are the sender's and target's protocol addresses.
type packet struct {
	InPort   uint32
	Proto    of.Protocol
	EthSrc   net.HardwareAddr
	EthDst   net.HardwareAddr
	Src, Dst netip.Addr
	TpDst    uint16
	CtResult uint32
	// TunSrc is the outer source of a packet that came through the tunnel.
	TunSrc netip.Addr
	// CtLabel is the label (low 64 bits) of the packet's connection, as
	// conntrack reports it for an established connection.
	CtLabel uint64
}

// verdict is where the tracer left the packet.
type verdict struct {
	Output    uint32 // port, 0 if none
	Normal    bool
	Committed bool
	// TunDst, EthSrc, EthDst and TTLDecrements are the packet's tunnel
	// destination and addresses as it left, and how often its TTL was
	// decremented.
	TunDst        netip.Addr
	EthSrc        net.HardwareAddr
	EthDst        net.HardwareAddr
	TTLDecrements int
	Regs          [16]uint32
	Path          []string // table names walked
	// Cookies are those of the flows the packet hit, in order.
	Cookies []uint64
	// Label is what the commit recorded in the connection's ct_label.
	Label uint64
}

func (v verdict) String() string {
	switch {
	case v.Normal:
		return "NORMAL"
	case v.Output != 0:
		return fmt.Sprintf("output:%d", v.Output)
	}
	return "drop"
}

// tracer evaluates OpenFlow semantics needed by the pipeline: priorities,
// conjunctive matches, registers, conntrack state and goto_table.
type tracer struct {
	tables map[uint8][]of.Flow
}

func newTracer(flows []of.Flow) *tracer {
	t := &tracer{tables: map[uint8][]of.Flow{}}
	for _, f := range flows {
		t.tables[f.Table.ID] = append(t.tables[f.Table.ID], f)
	}
	for id := range t.tables {
		fs := t.tables[id]
		sort.SliceStable(fs, func(i, j int) bool { return fs[i].Priority > fs[j].Priority })
	}
	return t
}

type pktState struct {
	packet
	regs    [16]uint32
	tracked bool
	conjID  uint32
}

func protoMatches(want, got of.Protocol) bool {
	switch want {
	case of.ProtoNone:
		return true
	case of.ProtoIP:
		return got != of.ProtoARP && got != of.ProtoNone
	}
	return want == got
}

func (s *pktState) matches(m of.Match) bool {
	if !protoMatches(m.Protocol, s.Proto) {
		return false
	}
	if m.InPort != 0 && m.InPort != s.InPort {
		return false
	}
	for _, r := range m.Regs {
		mask := r.Mask
		if mask == 0 {
			mask = 0xffffffff
		}
		if s.regs[r.Reg]&mask != r.Value&mask {
			return false
		}
	}
	if m.CtState.Mask != 0 {
		bits := uint32(0)
		if s.tracked {
			bits = s.CtResult | of.CtTrk
		}
		if bits&m.CtState.Mask != m.CtState.Set&m.CtState.Mask {
			return false
		}
	}
	if m.EthSrc != nil && m.EthSrc.String() != s.EthSrc.String() {
		return false
	}
	if m.EthDst != nil && m.EthDst.String() != s.EthDst.String() {
		return false
	}
	if m.IPSrc.IsValid() && !m.IPSrc.Contains(s.Src) {
		return false
	}
	if m.IPDst.IsValid() && !m.IPDst.Contains(s.Dst) {
		return false
	}
	if m.ARPSpa.IsValid() && m.ARPSpa != s.Src {
		return false
	}
	if m.ARPSha != nil && m.ARPSha.String() != s.EthSrc.String() {
		return false
	}
	if m.ARPTpa.IsValid() && m.ARPTpa != s.Dst {
		return false
	}
	if m.TunSrc.IsValid() && m.TunSrc != s.TunSrc {
		return false
	}
	if m.TpDst != 0 {
		mask := m.TpDstMask
		if mask == 0 {
			mask = 0xffff
		}
		if s.TpDst&mask != m.TpDst&mask {
			return false
		}
	}
	if m.CtLabel.Mask != 0 && (!s.tracked || s.CtLabel&m.CtLabel.Mask != m.CtLabel.Value&m.CtLabel.Mask) {
		return false
	}
	if m.ConjID != s.conjID {
		return false
	}
	return true
}

// lookup finds the flow a packet hits in a table, with OVS's conjunctive
// match semantics: at each priority, a plain flow wins; otherwise a
// conjunction whose every clause matched sends the packet to its conj_id flow.
func (t *tracer) lookup(s *pktState, table uint8) (of.Flow, bool) {
	flows := t.tables[table]
	for i := 0; i < len(flows); {
		prio := flows[i].Priority
		clauses := map[uint32]map[uint8]bool{}
		nclauses := map[uint32]uint8{}
		j := i
		for ; j < len(flows) && flows[j].Priority == prio; j++ {
			f := flows[j]
			if !s.matches(f.Match) {
				continue
			}
			if !isConjunctionOnly(f) {
				return f, true
			}
			for _, a := range f.Actions {
				c := a.(of.Conjunction)
				if clauses[c.ID] == nil {
					clauses[c.ID] = map[uint8]bool{}
				}
				clauses[c.ID][c.Clause] = true
				nclauses[c.ID] = c.NClauses
			}
		}
		var done []uint32
		for id, cs := range clauses {
			if uint8(len(cs)) == nclauses[id] {
				done = append(done, id)
			}
		}
		sort.Slice(done, func(a, b int) bool { return done[a] < done[b] })
		for _, id := range done {
			s.conjID = id
			for _, f := range flows {
				if f.Match.ConjID == id && s.matches(f.Match) {
					s.conjID = 0
					return f, true
				}
			}
			s.conjID = 0
		}
		i = j
	}
	return of.Flow{}, false
}

func (t *tracer) trace(p packet) verdict {
	s := &pktState{packet: p}
	var v verdict
	table := uint8(0)
	for steps := 0; steps < 64; steps++ {
		f, ok := t.lookup(s, table)
		if !ok {
			return v
		}
		v.Path = append(v.Path, f.Table.Name)
		v.Cookies = append(v.Cookies, f.Cookie)
		next := -1
		for _, a := range f.Actions {
			switch a := a.(type) {
			case of.LoadReg:
				width := uint32(a.End - a.Start + 1)
				mask := uint32(0xffffffff)
				if width < 32 {
					mask = (1<<width - 1) << a.Start
				}
				s.regs[a.Reg] = s.regs[a.Reg]&^mask | (a.Value<<a.Start)&mask
			case of.GotoTable:
				next = int(a.Table.ID)
			case of.CT:
				if a.Commit {
					v.Committed = true
					v.Label = commitLabel(s.regs, a.Exec)
				}
				if a.Table != nil {
					s.tracked = true
					next = int(a.Table.ID)
				}
			case of.OutputReg:
				v.Output = s.regs[a.Reg]
			case of.Output:
				v.Output = a.Port
			case of.Normal:
				v.Normal = true
			case of.SetEthSrc:
				s.EthSrc = a.MAC
			case of.SetEthDst:
				s.EthDst = a.MAC
			case of.SetTunDst:
				v.TunDst = a.IP
			case of.DecTTL:
				v.TTLDecrements++
			default:
				panic(fmt.Sprintf("trace: action %T is not implemented", a))
			}
		}
		v.Regs = s.regs
		v.EthSrc, v.EthDst = s.EthSrc, s.EthDst
		if next < 0 {
			return v
		}
		table = uint8(next)
	}
	panic("trace: loop")
}

// commitLabel evaluates the moves of a ct(commit,exec(...)) into the low 64
// bits of the connection's label.
func commitLabel(regs [16]uint32, exec []of.Action) uint64 {
	var label uint64
	for _, a := range exec {
		m, ok := a.(of.Move)
		if !ok || m.Dst != of.FieldCtLabel {
			panic(fmt.Sprintf("trace: exec action %s is not implemented", a))
		}
		var reg uint8
		if _, err := fmt.Sscanf(string(m.Src), "NXM_NX_REG%d", &reg); err != nil {
			panic(fmt.Sprintf("trace: move from %s is not implemented", m.Src))
		}
		bits := uint64(1)<<m.NBits - 1
		label = label&^(bits<<m.DstOfs) | (uint64(regs[reg])>>m.SrcOfs&bits)<<m.DstOfs
	}
	return label
}

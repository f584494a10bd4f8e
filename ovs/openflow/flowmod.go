package openflow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"antrea.io/libOpenflow/openflow15"
)

// Ethertypes and IP protocol numbers of the Protocol selectors.
const (
	ethTypeIPv4 = 0x0800
	ethTypeARP  = 0x0806
)

var ipProtos = map[Protocol]uint8{ProtoTCP: 6, ProtoUDP: 17, ProtoSCTP: 132, ProtoICMP: 1}

// maxTableID is the highest flow table; 255 means "all tables".
const maxTableID = 254

// flowMod translates f into an OpenFlow 1.5 flow_mod with the given command
// (openflow15.FC_ADD, FC_MODIFY_STRICT or FC_DELETE_STRICT). It returns an
// error, never panics, on a flow OVS would reject for its form: a missing
// protocol a field needs, an out-of-range register, a misplaced goto_table.
func flowMod(f Flow, command uint8) (*openflow15.FlowMod, error) {
	if f.Table.ID > maxTableID {
		return nil, fmt.Errorf("table %d is not a flow table", f.Table.ID)
	}
	fm := openflow15.NewFlowMod()
	fm.Command = command
	fm.TableId = f.Table.ID
	fm.Priority = f.Priority
	fm.Cookie = f.Cookie
	if command == openflow15.FC_ADD {
		// Strict modify and delete ignore the cookie (mask 0); an add sets it.
		fm.CookieMask = 0
	}
	fields, err := matchFields(f.Match)
	if err != nil {
		return nil, err
	}
	for _, field := range fields {
		fm.Match.AddField(*field)
	}
	if command == openflow15.FC_DELETE_STRICT {
		return fm, nil
	}
	instrs, err := instructions(f.Table, f.Actions)
	if err != nil {
		return nil, err
	}
	for _, instr := range instrs {
		fm.AddInstruction(instr)
	}
	if n := bundledLen(fm); n > maxMessageLen {
		return nil, fmt.Errorf("%d actions take %d bytes in a bundle message, more than the %d an OpenFlow message can carry",
			len(f.Actions), n, maxMessageLen)
	}
	return fm, nil
}

// maxMessageLen is the largest OpenFlow message: its length is 16 bits.
const maxMessageLen = 0xffff

// The bundle_add message: an OpenFlow header, the bundle id, 2 bytes of
// padding and the flags, then the message it adds.
const (
	typeBundleAdd      = openflow15.Type_BundleAddMessage
	bundleAddHeaderLen = 16
)

// appendBundleAdd appends fm wrapped in a bundle_add message of bundle id
// to b; both carry xid. It is what openflow15.BndleAdd marshals, without
// copying the marshalled flow_mod into a buffer of its own first.
func appendBundleAdd(b []byte, fm *openflow15.FlowMod, id uint32, flags uint16, xid uint32) ([]byte, error) {
	fm.Xid = xid
	msg, err := fm.MarshalBinary()
	if err != nil {
		return b, fmt.Errorf("encode flow_mod: %w", err)
	}
	n := bundleAddHeaderLen + len(msg)
	if n > maxMessageLen {
		return b, fmt.Errorf("a bundle_add of %d bytes is more than the %d an OpenFlow message can carry", n, maxMessageLen)
	}
	b = append(b, openflow15.VERSION, typeBundleAdd)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	b = binary.BigEndian.AppendUint32(b, xid)
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint16(b, flags)
	return append(b, msg...), nil
}

// rebaseXids adds base to the xid of every bundle_add message in b and of
// the message it carries.
func rebaseXids(b []byte, base uint32) {
	for len(b) >= bundleAddHeaderLen+headerLen {
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if n < bundleAddHeaderLen+headerLen || n > len(b) {
			return // not what appendBundleAdd wrote
		}
		for _, at := range []int{4, bundleAddHeaderLen + 4} {
			binary.BigEndian.PutUint32(b[at:], binary.BigEndian.Uint32(b[at:])+base)
		}
		b = b[n:]
	}
}

// bundledLen is the length of fm wrapped in a bundle_add message, counted
// without the 16-bit lengths libOpenflow uses (they wrap around: a longer
// message would be silently truncated when marshalled).
func bundledLen(fm *openflow15.FlowMod) int {
	const flowModFixed = 48 // header and fixed fields
	n := bundleAddHeaderLen + flowModFixed + int(fm.Match.Len())
	for _, instr := range fm.Instructions {
		if apply, ok := instr.(*openflow15.InstrActions); ok {
			n += 8
			for _, a := range apply.Actions {
				n += int(a.Len())
			}
			continue
		}
		n += int(instr.Len())
	}
	return n
}

// matchFields returns the OXM/NXM fields of m, prerequisites first (OVS
// checks each field's prerequisites as it reads the match).
func matchFields(m Match) ([]*openflow15.MatchField, error) {
	var fields []*openflow15.MatchField
	add := func(f *openflow15.MatchField) { fields = append(fields, f) }

	if m.InPort != 0 {
		add(openflow15.NewInPortField(m.InPort))
	}
	isIP, isARP := false, false
	switch m.Protocol {
	case ProtoNone:
	case ProtoARP:
		isARP = true
		add(openflow15.NewEthTypeField(ethTypeARP))
	case ProtoIP, ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP:
		isIP = true
		add(openflow15.NewEthTypeField(ethTypeIPv4))
		if proto, ok := ipProtos[m.Protocol]; ok {
			add(openflow15.NewIpProtoField(proto))
		}
	default:
		return nil, fmt.Errorf("unknown protocol %d", m.Protocol)
	}
	for _, r := range m.Regs {
		if r.Reg > 15 {
			return nil, fmt.Errorf("reg%d does not exist (reg0..reg15)", r.Reg)
		}
		if r.Mask == 0 || r.Mask == 0xffffffff {
			add(openflow15.NewRegMatchFieldWithMask(int(r.Reg), r.Value, 0))
		} else {
			add(openflow15.NewRegMatchFieldWithMask(int(r.Reg), r.Value, r.Mask))
		}
	}
	if m.CtState.Mask != 0 {
		add(openflow15.NewCTStateMatchField(&openflow15.CTStates{Data: m.CtState.Set & m.CtState.Mask, Mask: m.CtState.Mask}))
	}
	if m.EthSrc != nil {
		if len(m.EthSrc) != 6 {
			return nil, fmt.Errorf("dl_src %s is not a MAC address", m.EthSrc)
		}
		add(openflow15.NewEthSrcField(m.EthSrc, nil))
	}
	if m.EthDst != nil {
		if len(m.EthDst) != 6 {
			return nil, fmt.Errorf("dl_dst %s is not a MAC address", m.EthDst)
		}
		add(openflow15.NewEthDstField(m.EthDst, nil))
	}
	for _, p := range []struct {
		name string
		src  bool
	}{{"nw_src", true}, {"nw_dst", false}} {
		prefix := m.IPDst
		if p.src {
			prefix = m.IPSrc
		}
		if !prefix.IsValid() {
			continue
		}
		if !prefix.Addr().Is4() {
			return nil, fmt.Errorf("%s=%s: only IPv4 is supported", p.name, prefix)
		}
		if !isIP && !isARP {
			return nil, fmt.Errorf("%s needs protocol ip, tcp, udp, sctp, icmp or arp", p.name)
		}
		addr := net.IP(prefix.Masked().Addr().AsSlice())
		var mask *net.IP
		if !prefix.IsSingleIP() {
			m := net.IP(net.CIDRMask(prefix.Bits(), 32))
			mask = &m
		}
		switch {
		case isARP && p.src: // ovs-ofctl reads nw_src of arp as arp_spa
			add(openflow15.NewNxARPSpaMatchField(addr, maskOrNil(mask)))
		case isARP:
			add(openflow15.NewNxARPTpaMatchField(addr, maskOrNil(mask)))
		case p.src:
			add(openflow15.NewIpv4SrcField(addr, mask))
		default:
			add(openflow15.NewIpv4DstField(addr, mask))
		}
	}
	if m.ARPSpa.IsValid() {
		if !isARP || !m.ARPSpa.Is4() {
			return nil, errors.New("arp_spa needs protocol arp and an IPv4 address")
		}
		if m.IPSrc.IsValid() {
			return nil, errors.New("arp_spa and nw_src both set: for arp they are the same field")
		}
		add(openflow15.NewArpSpaField(net.IP(m.ARPSpa.AsSlice())))
	}
	if m.ARPSha != nil {
		if !isARP || len(m.ARPSha) != 6 {
			return nil, errors.New("arp_sha needs protocol arp and a MAC address")
		}
		add(openflow15.NewArpShaField(m.ARPSha))
	}
	if m.ARPTpa.IsValid() {
		if !isARP || !m.ARPTpa.Is4() {
			return nil, errors.New("arp_tpa needs protocol arp and an IPv4 address")
		}
		if m.IPDst.IsValid() {
			return nil, errors.New("arp_tpa and nw_dst both set: for arp they are the same field")
		}
		add(openflow15.NewArpTpaField(net.IP(m.ARPTpa.AsSlice())))
	}
	if m.TpDst != 0 {
		var f *openflow15.MatchField
		switch m.Protocol {
		case ProtoTCP:
			f = openflow15.NewTcpDstField(m.TpDst)
		case ProtoUDP:
			f = openflow15.NewUdpDstField(m.TpDst)
		case ProtoSCTP:
			f = openflow15.NewSctpDstField(m.TpDst)
		default:
			return nil, errors.New("tp_dst needs protocol tcp, udp or sctp")
		}
		if m.TpDstMask != 0 && m.TpDstMask != 0xffff {
			mask := openflow15.NewPortField(m.TpDstMask)
			f.HasMask = true
			f.Mask = mask
			f.Length += uint8(mask.Len())
		}
		add(f)
	}
	if m.ConjID != 0 {
		add(openflow15.NewConjIDMatchField(m.ConjID))
	}
	if m.TunSrc.IsValid() {
		if !m.TunSrc.Is4() {
			return nil, fmt.Errorf("tun_src=%s: only IPv4 is supported", m.TunSrc)
		}
		add(openflow15.NewTunnelIpv4SrcField(net.IP(m.TunSrc.AsSlice()), nil))
	}
	if m.CtLabel.Mask != 0 {
		if m.CtState.Mask&CtTrk == 0 || m.CtState.Set&CtTrk == 0 {
			return nil, errors.New("ct_label needs ct_state=+trk")
		}
		var value, mask [16]byte
		// ct_label is one 128-bit big-endian number: its low 64 bits are
		// the last 8 bytes.
		binary.BigEndian.PutUint64(value[8:], m.CtLabel.Value&m.CtLabel.Mask)
		binary.BigEndian.PutUint64(mask[8:], m.CtLabel.Mask)
		add(openflow15.NewCTLabelMatchField(value, &mask))
	}
	return fields, nil
}

func maskOrNil(m *net.IP) net.IP {
	if m == nil {
		return nil
	}
	return *m
}

// instructions returns apply_actions (unless there are no actions besides
// goto_table) followed by goto_table if the last action is one.
func instructions(table Table, actions []Action) ([]openflow15.Instruction, error) {
	var instrs []openflow15.Instruction
	var gotoTable *GotoTable
	if n := len(actions); n > 0 {
		if g, ok := actions[n-1].(GotoTable); ok {
			gotoTable = &g
			actions = actions[:n-1]
		}
	}
	if len(actions) > 0 {
		// The actions are collected and the length set once: AddAction
		// recomputes the length over all actions each time, which is
		// quadratic for a clause flow shared by thousands of rules.
		apply := openflow15.NewInstrApplyActions()
		apply.Actions = make([]openflow15.Action, 0, len(actions))
		for _, a := range actions {
			ofa, err := action(a, false)
			if err != nil {
				return nil, err
			}
			apply.Actions = append(apply.Actions, ofa)
		}
		apply.Length = apply.Len()
		instrs = append(instrs, apply)
	}
	if gotoTable != nil {
		if gotoTable.Table.ID <= table.ID || gotoTable.Table.ID > maxTableID {
			return nil, fmt.Errorf("goto_table must go to a later table than %s (%d), not %d", table, table.ID, gotoTable.Table.ID)
		}
		instrs = append(instrs, openflow15.NewInstrGotoTable(gotoTable.Table.ID))
	}
	return instrs, nil
}

// action translates one action; inCT is true inside ct(exec(...)).
func action(a Action, inCT bool) (openflow15.Action, error) {
	switch a := a.(type) {
	case Output:
		if a.Port == 0 {
			return nil, errors.New("output:0: port 0 does not exist")
		}
		return openflow15.NewActionOutput(a.Port), nil
	case Normal:
		return openflow15.NewActionOutput(openflow15.P_NORMAL), nil
	case OutputReg:
		if err := checkRegBits(a.Reg, a.Start, a.End); err != nil {
			return nil, fmt.Errorf("%s: %w", a, err)
		}
		return openflow15.NewOutputFromField(openflow15.NewRegMatchField(int(a.Reg), 0, nil),
			openflow15.NewNXRange(int(a.Start), int(a.End)).ToOfsBits()), nil
	case LoadReg:
		if err := checkRegBits(a.Reg, a.Start, a.End); err != nil {
			return nil, fmt.Errorf("%s: %w", a, err)
		}
		if bits := a.End - a.Start + 1; bits < 32 && a.Value>>bits != 0 {
			return nil, fmt.Errorf("%s: value does not fit in %d bits", a, bits)
		}
		// OpenFlow 1.5 has no NXAST_REG_LOAD: a load is a (masked) set_field,
		// as ovs-ofctl encodes it.
		mask := openflow15.NewNXRange(int(a.Start), int(a.End)).ToUint32Mask()
		if mask == 0xffffffff {
			mask = 0
		}
		field := openflow15.NewRegMatchFieldWithMask(int(a.Reg), a.Value<<a.Start, mask)
		return openflow15.NewActionSetField(*field), nil
	case Conjunction:
		if a.NClauses < 2 || a.NClauses > 64 || a.Clause < 1 || a.Clause > a.NClauses {
			return nil, fmt.Errorf("%s: want 1 <= clause <= n_clauses and 2 <= n_clauses <= 64", a)
		}
		// On the wire the clause is 0-based.
		return openflow15.NewNXActionConjunction(a.Clause-1, a.NClauses, a.ID), nil
	case Move:
		return moveAction(a, inCT)
	case SetCtMark:
		if !inCT {
			return nil, fmt.Errorf("%s: only valid inside ct(exec(...))", a)
		}
		return openflow15.NewActionSetField(*openflow15.NewCTMarkMatchField(a.Value, nil)), nil
	case CT:
		if inCT {
			return nil, fmt.Errorf("%s: ct inside ct(exec(...))", a)
		}
		if len(a.Exec) > 0 && !a.Commit {
			return nil, fmt.Errorf("%s: exec needs commit", a)
		}
		ct := openflow15.NewNXActionConnTrack().ZoneImm(a.Zone)
		if a.Commit {
			ct.Commit()
		}
		if a.Table != nil {
			if a.Table.ID > maxTableID {
				return nil, fmt.Errorf("%s: table %d is not a flow table", a, a.Table.ID)
			}
			ct.Table(a.Table.ID)
		}
		for _, e := range a.Exec {
			switch e := e.(type) {
			case SetCtMark:
			case Move:
				if e.Dst != FieldCtLabel && e.Dst != FieldCtMark {
					return nil, fmt.Errorf("%s: a move in exec may only write ct_label or ct_mark", a)
				}
			default:
				return nil, fmt.Errorf("%s: only set_field of ct_mark and moves to ct_label or ct_mark may run in exec", a)
			}
			ofa, err := action(e, true)
			if err != nil {
				return nil, err
			}
			ct.AddAction(ofa)
		}
		return ct, nil
	case SetEthSrc:
		if len(a.MAC) != 6 {
			return nil, fmt.Errorf("%s: not a MAC address", a)
		}
		return openflow15.NewActionSetField(*openflow15.NewEthSrcField(a.MAC, nil)), nil
	case SetEthDst:
		if len(a.MAC) != 6 {
			return nil, fmt.Errorf("%s: not a MAC address", a)
		}
		return openflow15.NewActionSetField(*openflow15.NewEthDstField(a.MAC, nil)), nil
	case SetTunDst:
		if !a.IP.Is4() {
			return nil, fmt.Errorf("%s: only IPv4 is supported", a)
		}
		return openflow15.NewActionSetField(*openflow15.NewTunnelIpv4DstField(net.IP(a.IP.AsSlice()), nil)), nil
	case DecTTL:
		return openflow15.NewActionDecNwTtl(), nil
	case GotoTable:
		return nil, fmt.Errorf("%s must be the last action", a)
	case nil:
		return nil, errors.New("nil action")
	default:
		return nil, fmt.Errorf("unsupported action %T", a)
	}
}

// moveAction translates a Move; outside ct(exec(...)) it may not write the
// connection's fields.
func moveAction(a Move, inCT bool) (openflow15.Action, error) {
	srcWidth, dstWidth := a.Src.width(), a.Dst.width()
	switch {
	case srcWidth == 0:
		return nil, fmt.Errorf("%s: unknown source field %q", a, a.Src)
	case dstWidth == 0:
		return nil, fmt.Errorf("%s: unknown destination field %q", a, a.Dst)
	case a.NBits == 0 || a.SrcOfs+a.NBits > srcWidth || a.DstOfs+a.NBits > dstWidth:
		return nil, fmt.Errorf("%s: bits out of range (%s has %d, %s %d)", a, a.Src, srcWidth, a.Dst, dstWidth)
	case !inCT && (a.Dst == FieldCtLabel || a.Dst == FieldCtMark):
		return nil, fmt.Errorf("%s: %s is written only inside ct(commit,exec(...))", a, a.Dst)
	}
	// OVS takes NXAST_REG_MOVE only up to OpenFlow 1.4; OpenFlow 1.5 has
	// the standard copy_field, which is what ovs-ofctl sends for move.
	src, err := openflow15.FindOxmIdByName(string(a.Src), false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	dst, err := openflow15.FindOxmIdByName(string(a.Dst), false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	return openflow15.NewActionCopyField(a.NBits, a.SrcOfs, a.DstOfs, *src, *dst), nil
}

func checkRegBits(reg, start, end uint8) error {
	switch {
	case reg > 15:
		return fmt.Errorf("reg%d does not exist (reg0..reg15)", reg)
	case start > end || end > 31:
		return fmt.Errorf("bits %d..%d are not within 0..31", start, end)
	}
	return nil
}

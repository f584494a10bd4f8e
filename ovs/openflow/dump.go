package openflow

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"antrea.io/libOpenflow/openflow15"
)

// FlowEntry is one flow entry as OVS reports it: its counters and its
// match, decoded from OVS's reply (not from what was sent).
type FlowEntry struct {
	FlowStat
	Match Match
	// Unknown lists the match fields this package has no Match field for,
	// as "class:field"; empty for every flow this package installs.
	Unknown []string `json:",omitempty"`
}

// Key is the entry's table, priority and match as Flow.DumpKey renders
// them, so an entry can be paired with the Flow that installed it.
func (e FlowEntry) Key() string {
	return Flow{Table: Table{ID: e.Table}, Priority: e.Priority, Match: e.Match}.Key()
}

// DumpKey is f's key as the FlowEntry of f reports it (FlowEntry.Key):
// for arp, a single nw_src or nw_dst address is the same field as arp_spa
// or arp_tpa, and a dump reports it as the latter.
func (f Flow) DumpKey() string {
	f.Match = canonicalARP(f.Match)
	return f.Key()
}

func canonicalARP(m Match) Match {
	if m.Protocol != ProtoARP {
		return m
	}
	if m.IPSrc.IsValid() && m.IPSrc.IsSingleIP() && !m.ARPSpa.IsValid() {
		m.ARPSpa, m.IPSrc = m.IPSrc.Addr(), netip.Prefix{}
	}
	if m.IPDst.IsValid() && m.IPDst.IsSingleIP() && !m.ARPTpa.IsValid() {
		m.ARPTpa, m.IPDst = m.IPDst.Addr(), netip.Prefix{}
	}
	return m
}

// DumpFlows returns the flows in table (AllTables for every table) whose
// cookie matches cookie under cookieMask, with their matches and counters,
// as `ovs-ofctl dump-flows table=T cookie=C/M` lists them. Actions are not
// decoded: pair an entry with the installed Flow by Key for them.
func (c *Client) DumpFlows(ctx context.Context, table uint8, cookie, cookieMask uint64) ([]FlowEntry, error) {
	return flowDesc(ctx, c, table, cookie, cookieMask, parseFlowEntries)
}

// parseFlowEntries decodes one OFPMP_FLOW_DESC reply with the flows'
// matches.
func parseFlowEntries(msg []byte) (bool, []FlowEntry, error) {
	more, _, err := parseFlowDescReply(msg) // validates the message
	if err != nil {
		return false, nil, err
	}
	var out []FlowEntry
	for b := msg[headerLen+8:]; len(b) > 0; {
		st, n, err := parseFlowDesc(b)
		if err != nil {
			return false, nil, err
		}
		e := FlowEntry{FlowStat: st}
		// The match follows the 24-byte fixed part: type, length (without
		// padding), OXM fields.
		mlen := int(binary.BigEndian.Uint16(b[26:28]))
		if mlen < 4 || 24+mlen > n {
			return false, nil, fmt.Errorf("%w: match length %d", errStatsReply, mlen)
		}
		if err := decodeMatch(b[28:24+mlen], &e); err != nil {
			return false, nil, err
		}
		out = append(out, e)
		b = b[n:]
	}
	return more, out, nil
}

// Codes decodeMatch needs that libOpenflow does not name: the experimenter
// class, the legacy NXM class 0 fields, IP protocol numbers and full masks.
const (
	classExperim  = 0xffff
	nxmInPort     = 0
	nxmEthDst     = 1
	nxmEthSrc     = 2
	nxmEthType    = 3
	nxmIPProto    = 6
	nxmIPSrc      = 7
	nxmIPDst      = 8
	nxmTCPDst     = 10
	nxmUDPDst     = 12
	nxmARPSpa     = 16
	nxmARPTpa     = 17
	nxRegLast     = 15
	ipProtoICMP   = 1
	ipProtoTCP    = 6
	ipProtoUDP    = 17
	ipProtoSCTP   = 132
	fullMask32    = 0xffffffff
	fullMaskShort = 0xffff
)

// oxm is one decoded match field: value and mask (all ones if unmasked).
type oxm struct {
	class       uint16
	field       uint8
	value, mask []byte
}

// decodeMatch fills e.Match (and e.Unknown) from OXM/NXM fields.
func decodeMatch(b []byte, e *FlowEntry) error {
	var ethType uint16
	var ipProto uint8
	m := &e.Match
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%w: truncated match field", errStatsReply)
		}
		hdr := binary.BigEndian.Uint32(b)
		f := oxm{class: uint16(hdr >> 16), field: uint8(hdr>>9) & 0x7f}
		hasMask, n := hdr&0x100 != 0, int(hdr&0xff)
		if 4+n > len(b) {
			return fmt.Errorf("%w: match field of %d bytes", errStatsReply, n)
		}
		payload := b[4 : 4+n]
		b = b[4+n:]
		if f.class == classExperim {
			e.Unknown = append(e.Unknown, fmt.Sprintf("0x%x:%d", f.class, f.field))
			continue
		}
		if hasMask {
			f.value, f.mask = payload[:n/2], payload[n/2:]
		} else {
			f.value = payload
			f.mask = make([]byte, n)
			for i := range f.mask {
				f.mask[i] = 0xff
			}
		}
		switch {
		case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ETH_TYPE) || f.is(openflow15.OXM_CLASS_NXM_0, nxmEthType):
			ethType = uint16(f.uint())
		case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_IP_PROTO) || f.is(openflow15.OXM_CLASS_NXM_0, nxmIPProto):
			ipProto = uint8(f.uint())
		default:
			if !setField(m, f) {
				e.Unknown = append(e.Unknown, fmt.Sprintf("0x%x:%d", f.class, f.field))
			}
		}
	}
	switch ethType {
	case 0:
	case ethTypeARP:
		m.Protocol = ProtoARP
	case ethTypeIPv4:
		m.Protocol = map[uint8]Protocol{0: ProtoIP, ipProtoTCP: ProtoTCP, ipProtoUDP: ProtoUDP,
			ipProtoSCTP: ProtoSCTP, ipProtoICMP: ProtoICMP}[ipProto]
		if m.Protocol == ProtoNone {
			e.Unknown = append(e.Unknown, fmt.Sprintf("nw_proto=%d", ipProto))
		}
	default:
		e.Unknown = append(e.Unknown, fmt.Sprintf("dl_type=0x%04x", ethType))
	}
	// OVS reports registers in its own order; Match lists them by number.
	sort.Slice(m.Regs, func(i, j int) bool { return m.Regs[i].Reg < m.Regs[j].Reg })
	*m = canonicalARP(*m)
	return nil
}

func (f oxm) is(class uint16, field uint8) bool { return f.class == class && f.field == field }

// uint returns the field's value (up to 8 bytes) as a number.
func (f oxm) uint() uint64 {
	var v uint64
	for _, c := range f.value {
		v = v<<8 | uint64(c)
	}
	return v
}

func (f oxm) maskUint() uint64 {
	var v uint64
	for _, c := range f.mask {
		v = v<<8 | uint64(c)
	}
	return v
}

// prefix returns an IPv4 field as a prefix; ok is false for a mask that
// is not a prefix.
func (f oxm) prefix() (netip.Prefix, bool) {
	if len(f.value) != 4 {
		return netip.Prefix{}, false
	}
	ones, bits := net.IPMask(f.mask).Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte(f.value)), ones), true
}

// setField stores f in m; false if Match has no place for it.
func setField(m *Match, f oxm) bool {
	switch {
	case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_IN_PORT) && len(f.value) == 4:
		m.InPort = uint32(f.uint())
	case f.is(openflow15.OXM_CLASS_NXM_0, nxmInPort) && len(f.value) == 2:
		m.InPort = uint32(f.uint())
	case (f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ETH_DST) || f.is(openflow15.OXM_CLASS_NXM_0, nxmEthDst)) && len(f.value) == 6:
		m.EthDst = net.HardwareAddr(append([]byte(nil), f.value...))
	case (f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ETH_SRC) || f.is(openflow15.OXM_CLASS_NXM_0, nxmEthSrc)) && len(f.value) == 6:
		m.EthSrc = net.HardwareAddr(append([]byte(nil), f.value...))
	case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_IPV4_SRC) || f.is(openflow15.OXM_CLASS_NXM_0, nxmIPSrc) || f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ARP_SPA) || f.is(openflow15.OXM_CLASS_NXM_0, nxmARPSpa):
		p, ok := f.prefix()
		m.IPSrc = p
		return ok
	case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_IPV4_DST) || f.is(openflow15.OXM_CLASS_NXM_0, nxmIPDst) || f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ARP_TPA) || f.is(openflow15.OXM_CLASS_NXM_0, nxmARPTpa):
		p, ok := f.prefix()
		m.IPDst = p
		return ok
	case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_ARP_SHA) || f.is(openflow15.OXM_CLASS_NXM_1, openflow15.NXM_NX_ARP_SHA):
		m.ARPSha = net.HardwareAddr(append([]byte(nil), f.value...))
	case f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_TCP_DST), f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_UDP_DST), f.is(openflow15.OXM_CLASS_OPENFLOW_BASIC, openflow15.OXM_FIELD_SCTP_DST),
		f.is(openflow15.OXM_CLASS_NXM_0, nxmTCPDst), f.is(openflow15.OXM_CLASS_NXM_0, nxmUDPDst):
		m.TpDst = uint16(f.uint())
		if mask := uint16(f.maskUint()); mask != fullMaskShort {
			m.TpDstMask = mask
		}
	case f.class == openflow15.OXM_CLASS_NXM_1 && f.field <= nxRegLast:
		addReg(m, f.field, uint32(f.uint()), uint32(f.maskUint()))
	case f.class == openflow15.OXM_CLASS_PACKET_REGS && len(f.value) == 8:
		// xregN is reg(2N) in its high half and reg(2N+1) in its low half.
		v, mask := f.uint(), f.maskUint()
		addReg(m, 2*f.field, uint32(v>>32), uint32(mask>>32))
		addReg(m, 2*f.field+1, uint32(v), uint32(mask))
	case f.is(openflow15.OXM_CLASS_NXM_1, openflow15.NXM_NX_CONJ_ID):
		m.ConjID = uint32(f.uint())
	case f.is(openflow15.OXM_CLASS_NXM_1, openflow15.NXM_NX_CT_STATE):
		m.CtState = CtState{Set: uint32(f.uint()), Mask: uint32(f.maskUint())}
	case f.is(openflow15.OXM_CLASS_NXM_1, openflow15.NXM_NX_TUN_IPV4_SRC) && len(f.value) == 4:
		m.TunSrc = netip.AddrFrom4([4]byte(f.value))
	case f.is(openflow15.OXM_CLASS_NXM_1, openflow15.NXM_NX_CT_LABEL) && len(f.value) == 16:
		// Match holds the low 64 bits of the 128-bit label.
		m.CtLabel = CtLabelMatch{Value: binary.BigEndian.Uint64(f.value[8:]), Mask: binary.BigEndian.Uint64(f.mask[8:])}
		return binary.BigEndian.Uint64(f.mask[:8]) == 0
	default:
		return false
	}
	return true
}

// addReg records a register match unless its mask is empty (an xreg's
// half that is not matched).
func addReg(m *Match, reg uint8, value, mask uint32) {
	if mask == 0 {
		return
	}
	if mask == fullMask32 {
		mask = 0
	}
	m.Regs = append(m.Regs, RegMatch{Reg: reg, Value: value, Mask: mask})
}

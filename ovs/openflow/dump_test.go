package openflow

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
	"github.com/google/go-cmp/cmp"
)

// descWithMatch encodes a one-flow OFPMP_FLOW_DESC reply whose match has
// the given fields, as OVS writes them for OpenFlow 1.5.
func descWithMatch(t *testing.T, fields ...*openflow15.MatchField) []byte {
	t.Helper()
	reply := openflow15.NewMpReply(openflow15.MultipartType_FlowDesc)
	d := openflow15.NewFlowDesc()
	d.TableId, d.Priority, d.Cookie = 9, 200, 0x103000000000001
	for _, f := range fields {
		d.Match.AddField(*f)
	}
	packets, bytes := openflow15.NewPacketCountStatField(), openflow15.NewByteCountStatField()
	packets.Count, bytes.Count = 4, 296
	d.Stats.Fields = []util.Message{packets, bytes}
	reply.Body = append(reply.Body, d)
	b, err := reply.MarshalBinary()
	if err != nil {
		t.Fatalf("encoding the reply: %v", err)
	}
	return b
}

// xreg is OVS's OpenFlow 1.5 form of two 32-bit registers: reg(2n) in the
// high half of xreg n, reg(2n+1) in the low half.
func xreg(n uint8, value, mask uint64) *openflow15.MatchField {
	v, m := make([]byte, 8), make([]byte, 8)
	binary.BigEndian.PutUint64(v, value)
	binary.BigEndian.PutUint64(m, mask)
	return &openflow15.MatchField{Class: openflow15.OXM_CLASS_PACKET_REGS, Field: n, HasMask: true, Length: 16,
		Value: &openflow15.ByteArrayField{Data: v, Length: 8}, Mask: &openflow15.ByteArrayField{Data: m, Length: 8}}
}

func TestParseFlowEntries(t *testing.T) {
	var label, labelMask [16]byte
	binary.BigEndian.PutUint64(label[8:], 1<<32)
	binary.BigEndian.PutUint64(labelMask[8:], 0xffffffff<<32)
	for _, tc := range []struct {
		name   string
		fields []*openflow15.MatchField
		want   Match
	}{
		{"conjunction", []*openflow15.MatchField{openflow15.NewEthTypeField(ethTypeIPv4), openflow15.NewConjIDMatchField(1)},
			Match{Protocol: ProtoIP, ConjID: 1}},
		{"xreg halves", []*openflow15.MatchField{openflow15.NewEthTypeField(ethTypeIPv4), xreg(0, 0x2<<32|0x4, 0xf<<32|0xffffffff)},
			Match{Protocol: ProtoIP, Regs: []RegMatch{{Reg: 0, Value: 2, Mask: 0xf}, {Reg: 1, Value: 4}}}},
		{"ct_label", []*openflow15.MatchField{openflow15.NewEthTypeField(ethTypeIPv4),
			openflow15.NewCTStateMatchField(&openflow15.CTStates{Data: CtTrk, Mask: CtTrk | CtNew}),
			openflow15.NewCTLabelMatchField(label, &labelMask)},
			Match{Protocol: ProtoIP, CtState: CtState{Set: CtTrk, Mask: CtTrk | CtNew}, CtLabel: CtLabelMatch{Value: 1 << 32, Mask: 0xffffffff << 32}}},
		{"tcp port and source prefix", []*openflow15.MatchField{openflow15.NewEthTypeField(ethTypeIPv4), openflow15.NewIpProtoField(6),
			openflow15.NewIpv4SrcField(net.IP{198, 19, 0, 0}, ptr(net.IP{255, 255, 255, 0})), openflow15.NewTcpDstField(80)},
			Match{Protocol: ProtoTCP, IPSrc: netip.MustParsePrefix("198.19.0.0/24"), TpDst: 80}},
		{"arp target", []*openflow15.MatchField{openflow15.NewEthTypeField(ethTypeARP), openflow15.NewArpTpaField(net.IP{198, 19, 0, 3})},
			Match{Protocol: ProtoARP, ARPTpa: netip.MustParseAddr("198.19.0.3")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			more, entries, err := parseFlowEntries(descWithMatch(t, tc.fields...))
			if err != nil {
				t.Fatal(err)
			}
			if more || len(entries) != 1 {
				t.Fatalf("more=%v, %d entries", more, len(entries))
			}
			e := entries[0]
			if got, want := e.Match.String(), tc.want.String(); got != want {
				t.Errorf("match %q, want %q", got, want)
			}
			if len(e.Unknown) > 0 {
				t.Errorf("unknown fields %v", e.Unknown)
			}
			if e.Packets != 4 || e.Bytes != 296 || e.Cookie != 0x103000000000001 || e.Table != 9 || e.Priority != 200 {
				t.Errorf("counters/key %+v", e.FlowStat)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseFlowEntriesReportsUnknownFields(t *testing.T) {
	_, entries, err := parseFlowEntries(descWithMatch(t, openflow15.NewEthTypeField(0x86dd)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"dl_type=0x86dd"}, entries[0].Unknown); diff != "" {
		t.Errorf("unknown (-want +got):\n%s", diff)
	}
}

func TestDumpKeyCanonicalizesARP(t *testing.T) {
	f := Flow{Table: Table{ID: 2}, Priority: 190, Match: Match{Protocol: ProtoARP, IPDst: netip.MustParsePrefix("198.18.0.9/32")}}
	e := FlowEntry{FlowStat: FlowStat{Table: 2, Priority: 190}, Match: Match{Protocol: ProtoARP, ARPTpa: netip.MustParseAddr("198.18.0.9")}}
	if f.DumpKey() != e.Key() {
		t.Errorf("DumpKey %q != entry key %q", f.DumpKey(), e.Key())
	}
}

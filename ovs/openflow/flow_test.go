package openflow

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"antrea.io/libOpenflow/openflow15"
)

var (
	testIngress = Table{ID: 3, Name: "IngressRule"}
	testOutput  = Table{ID: 5, Name: "Output"}
)

func TestFlowString(t *testing.T) {
	for _, tc := range []struct {
		name string
		flow Flow
		want string
	}{
		{
			name: "drop with empty match",
			flow: Flow{Table: Table{ID: 0}, Priority: 0},
			want: "cookie=0x0,table=0,priority=0 actions=drop",
		},
		{
			name: "conjunction clause",
			flow: Flow{Table: testIngress, Priority: 200, Cookie: 0x10,
				Match:   Match{Protocol: ProtoTCP, TpDst: 0x1f90, TpDstMask: 0xfff0},
				Actions: []Action{Conjunction{ID: 10, Clause: 3, NClauses: 3}, Conjunction{ID: 11, Clause: 1, NClauses: 2}}},
			want: "cookie=0x10,table=IngressRule,priority=200,tcp,tp_dst=0x1f90/0xfff0 actions=conjunction(10,3/3),conjunction(11,1/2)",
		},
		{
			name: "conj_id with commit",
			flow: Flow{Table: testIngress, Priority: 200, Cookie: 0x10,
				Match:   Match{Protocol: ProtoIP, ConjID: 10},
				Actions: []Action{CT{Commit: true, Zone: 65520, Exec: []Action{SetCtMark{Value: 1}}}, GotoTable{Table: testOutput}}},
			want: "cookie=0x10,table=IngressRule,priority=200,ip,conj_id=10 actions=ct(commit,zone=65520,exec(set_field:0x1->ct_mark)),goto_table:Output",
		},
		{
			name: "every match field",
			flow: Flow{Table: Table{ID: 1}, Priority: 7, Cookie: 0xabc,
				Match: Match{InPort: 4, Protocol: ProtoARP,
					Regs:    []RegMatch{{Reg: 0, Value: 2, Mask: 0xffff}, {Reg: 1, Value: 5}},
					CtState: CtState{Set: CtNew | CtTrk, Mask: CtNew | CtEst | CtTrk},
					EthSrc:  mustMAC("aa:bb:cc:00:00:01"), EthDst: mustMAC("aa:bb:cc:00:00:02"),
					IPSrc: netip.MustParsePrefix("198.18.0.0/16"), IPDst: netip.MustParsePrefix("198.18.1.1/32"),
					ARPSpa: netip.MustParseAddr("198.18.0.1"), ARPSha: mustMAC("aa:bb:cc:00:00:03")},
				Actions: []Action{LoadReg{Reg: 2, Start: 0, End: 15, Value: 3}, OutputReg{Reg: 1, Start: 0, End: 15}, Output{Port: 2}, Normal{}}},
			want: "cookie=0xabc,table=1,priority=7,arp,in_port=4,reg0=0x2/0xffff,reg1=0x5,ct_state=+new-est+trk," +
				"dl_src=aa:bb:cc:00:00:01,dl_dst=aa:bb:cc:00:00:02,nw_src=198.18.0.0/16,nw_dst=198.18.1.1," +
				"arp_spa=198.18.0.1,arp_sha=aa:bb:cc:00:00:03 " +
				"actions=load:0x3->NXM_NX_REG2[0..15],output:NXM_NX_REG1[0..15],output:2,NORMAL",
		},
		{
			name: "routing and tunnel fields",
			flow: Flow{Table: Table{ID: 2, Name: "L3Forwarding"}, Priority: 200, Cookie: 0x5,
				Match: Match{InPort: 9, Protocol: ProtoIP, Regs: []RegMatch{{Reg: 0, Value: 3, Mask: 0xf}},
					IPDst: netip.MustParsePrefix("198.19.1.7/32"), TunSrc: netip.MustParseAddr("198.18.0.12")},
				Actions: []Action{SetEthSrc{MAC: mustMAC("0a:58:c6:13:01:01")}, SetEthDst{MAC: mustMAC("aa:bb:cc:00:00:07")},
					DecTTL{}, SetTunDst{IP: netip.MustParseAddr("198.18.0.13")}, Output{Port: 1}}},
			want: "cookie=0x5,table=L3Forwarding,priority=200,ip,in_port=9,reg0=0x3/0xf,nw_dst=198.19.1.7,tun_src=198.18.0.12 " +
				"actions=set_field:0a:58:c6:13:01:01->eth_src,set_field:aa:bb:cc:00:00:07->eth_dst,dec_ttl,set_field:198.18.0.13->tun_dst,output:1",
		},
		{
			name: "arp target",
			flow: Flow{Priority: 210, Match: Match{Protocol: ProtoARP, ARPTpa: netip.MustParseAddr("198.19.1.1")}, Actions: []Action{Output{Port: 2}}},
			want: "cookie=0x0,table=0,priority=210,arp,arp_tpa=198.19.1.1 actions=output:2",
		},
		{
			name: "rule ids into the connection's label",
			flow: Flow{Table: Table{ID: 10, Name: "ConntrackCommit"}, Priority: 200,
				Match: Match{Protocol: ProtoIP, CtState: CtState{Set: CtNew | CtTrk, Mask: CtNew | CtTrk}},
				Actions: []Action{CT{Commit: true, Zone: 65520, Exec: []Action{
					Move{Src: RegField(2), Dst: FieldCtLabel, NBits: 32},
					Move{Src: RegField(3), Dst: FieldCtLabel, DstOfs: 32, NBits: 32}}}}},
			want: "cookie=0x0,table=ConntrackCommit,priority=200,ip,ct_state=+new+trk actions=ct(commit,zone=65520,exec(" +
				"move:NXM_NX_REG2[0..31]->NXM_NX_CT_LABEL[0..31],move:NXM_NX_REG3[0..31]->NXM_NX_CT_LABEL[32..63]))",
		},
		{
			name: "ct_label",
			flow: Flow{Table: Table{ID: 6, Name: "EgressMetric"}, Priority: 200,
				Match: Match{Protocol: ProtoIP, CtState: CtState{Set: CtTrk, Mask: CtNew | CtTrk}, CtLabel: CtLabelMatch{Value: 5 << 32, Mask: 0xffffffff << 32}}},
			want: "cookie=0x0,table=EgressMetric,priority=200,ip,ct_state=-new+trk,ct_label=0x500000000/0xffffffff00000000 actions=drop",
		},
		{
			name: "ct to a table",
			flow: Flow{Table: Table{ID: 1, Name: "Conntrack"}, Priority: 100,
				Match: Match{Protocol: ProtoIP}, Actions: []Action{CT{Zone: 65520, Table: &Table{ID: 2, Name: "ConntrackState"}}}},
			want: "cookie=0x0,table=Conntrack,priority=100,ip actions=ct(table=ConntrackState,zone=65520)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.flow.String(); got != tc.want {
				t.Errorf("String() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestFlowModRejectsInvalidFlows(t *testing.T) {
	ip := Match{Protocol: ProtoIP}
	for _, tc := range []struct {
		name string
		flow Flow
		want string
	}{
		{"table 255", Flow{Table: Table{ID: 255}}, "not a flow table"},
		{"unknown protocol", Flow{Match: Match{Protocol: Protocol(42)}}, "unknown protocol"},
		{"reg16 match", Flow{Match: Match{Regs: []RegMatch{{Reg: 16}}}}, "reg16 does not exist"},
		{"nw_src without ip", Flow{Match: Match{IPSrc: netip.MustParsePrefix("198.18.0.0/16")}}, "nw_src needs protocol"},
		{"IPv6", Flow{Match: Match{Protocol: ProtoIP, IPDst: netip.MustParsePrefix("2001:db8::/32")}}, "only IPv4"},
		{"tp_dst without l4", Flow{Match: Match{Protocol: ProtoIP, TpDst: 80}}, "tp_dst needs protocol"},
		{"arp_spa without arp", Flow{Match: Match{Protocol: ProtoIP, ARPSpa: netip.MustParseAddr("198.18.0.1")}}, "arp_spa needs"},
		{"short MAC", Flow{Match: Match{EthSrc: net.HardwareAddr{1, 2}}}, "not a MAC"},
		{"goto earlier table", Flow{Table: testOutput, Actions: []Action{GotoTable{Table: testIngress}}}, "later table"},
		{"goto not last", Flow{Table: Table{ID: 1}, Actions: []Action{GotoTable{Table: testOutput}, Normal{}}}, "must be the last action"},
		{"load too wide", Flow{Actions: []Action{LoadReg{Reg: 1, Start: 0, End: 3, Value: 16}}}, "does not fit"},
		{"bad bit range", Flow{Actions: []Action{OutputReg{Reg: 1, Start: 16, End: 15}}}, "not within 0..31"},
		{"conjunction clause 0", Flow{Actions: []Action{Conjunction{ID: 1, Clause: 0, NClauses: 2}}}, "clause"},
		{"set ct_mark outside ct", Flow{Match: ip, Actions: []Action{SetCtMark{Value: 1}}}, "only valid inside ct"},
		{"exec without commit", Flow{Match: ip, Actions: []Action{CT{Exec: []Action{SetCtMark{Value: 1}}}}}, "exec needs commit"},
		{"output in exec", Flow{Match: ip, Actions: []Action{CT{Commit: true, Exec: []Action{Output{Port: 1}}}}}, "only set_field of ct_mark"},
		{"nil action", Flow{Actions: []Action{nil}}, "nil action"},
		{"output 0", Flow{Actions: []Action{Output{}}}, "port 0"},
		{"arp_tpa without arp", Flow{Match: Match{Protocol: ProtoIP, ARPTpa: netip.MustParseAddr("198.18.0.1")}}, "arp_tpa needs"},
		{"arp_tpa and nw_dst", Flow{Match: Match{Protocol: ProtoARP, ARPTpa: netip.MustParseAddr("198.18.0.1"), IPDst: netip.MustParsePrefix("198.18.0.2/32")}}, "same field"},
		{"IPv6 tun_src", Flow{Match: Match{TunSrc: netip.MustParseAddr("2001:db8::1")}}, "only IPv4"},
		{"short eth_src", Flow{Actions: []Action{SetEthSrc{MAC: net.HardwareAddr{1}}}}, "not a MAC"},
		{"short eth_dst", Flow{Actions: []Action{SetEthDst{}}}, "not a MAC"},
		{"move to an unknown field", Flow{Actions: []Action{Move{Src: RegField(1), Dst: "NXM_NX_FOO", NBits: 1}}}, "unknown destination"},
		{"move from reg16", Flow{Actions: []Action{Move{Src: RegField(16), Dst: RegField(1), NBits: 1}}}, "unknown source"},
		{"move too wide", Flow{Actions: []Action{Move{Src: RegField(1), Dst: RegField(2), DstOfs: 1, NBits: 32}}}, "out of range"},
		{"move of no bits", Flow{Actions: []Action{Move{Src: RegField(1), Dst: RegField(2)}}}, "out of range"},
		{"ct_label outside ct", Flow{Actions: []Action{Move{Src: RegField(1), Dst: FieldCtLabel, NBits: 32}}}, "only inside ct"},
		{"move to a register in exec", Flow{Match: ip, Actions: []Action{CT{Commit: true, Exec: []Action{Move{Src: RegField(1), Dst: RegField(2), NBits: 32}}}}}, "only write ct_label"},
		{"ct_label untracked", Flow{Match: Match{Protocol: ProtoIP, CtLabel: CtLabelMatch{Value: 1, Mask: 1}}}, "needs ct_state=+trk"},
		{"IPv6 tun_dst", Flow{Actions: []Action{SetTunDst{IP: netip.MustParseAddr("2001:db8::1")}}}, "only IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := flowMod(tc.flow, openflow15.FC_ADD)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("flowMod(%s) error = %v, want one containing %q", tc.flow, err, tc.want)
			}
		})
	}
}

func TestFlowKey(t *testing.T) {
	for _, tc := range []struct {
		flow Flow
		want string
	}{
		{Flow{Table: Table{ID: 0}}, "table=0,priority=0,"},
		{Flow{Table: testIngress, Priority: 200, Cookie: 9, Match: Match{Protocol: ProtoIP, IPSrc: netip.MustParsePrefix("198.18.0.0/15"),
			Regs: []RegMatch{{Reg: 1, Value: 0x5}}}, Actions: []Action{Normal{}}},
			"table=3,priority=200,ip,reg1=0x5,nw_src=198.18.0.0/15"},
	} {
		if got := tc.flow.Key(); got != tc.want {
			t.Errorf("Key() = %q, want %q", got, tc.want)
		}
	}
}

// TestFlowModMessageLimit checks that a flow too large for one OpenFlow
// message is refused rather than truncated (libOpenflow's 16-bit lengths
// wrap around): a conjunction() action takes 16 bytes.
func TestFlowModMessageLimit(t *testing.T) {
	conjunctions := func(n int) Flow {
		as := make([]Action, n)
		for i := range as {
			as[i] = Conjunction{ID: uint32(i + 1), Clause: 1, NClauses: 2}
		}
		return Flow{Table: testIngress, Priority: 200, Match: Match{Protocol: ProtoIP, InPort: 1}, Actions: as}
	}
	for _, tc := range []struct {
		actions int
		ok      bool
	}{{4000, true}, {4089, true}, {4090, false}, {10000, false}} {
		fm, err := flowMod(conjunctions(tc.actions), openflow15.FC_ADD)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%d conjunctions: %v", tc.actions, err)
		case tc.ok:
			add := openflow15.NewBndleAdd(1, 0)
			add.Message = fm
			if b, err := add.MarshalBinary(); err != nil || len(b) != bundledLen(fm) || int(binary.BigEndian.Uint16(b[2:4])) != len(b) {
				t.Errorf("%d conjunctions: marshalled %d bytes (err %v), want %d with that length in the header", tc.actions, len(b), err, bundledLen(fm))
			}
		case err == nil || !strings.Contains(err.Error(), "more than the 65535"):
			t.Errorf("%d conjunctions: error %v, want one about the message limit", tc.actions, err)
		}
	}
}

// TestAppendBundleAdd checks the bundle_add encoding against libOpenflow's,
// and that rebaseXids moves both xids of every message.
func TestAppendBundleAdd(t *testing.T) {
	flows := []Flow{
		{Table: testIngress, Priority: 200, Cookie: 7, Match: Match{Protocol: ProtoIP, IPSrc: netip.MustParsePrefix("198.18.0.1/32")},
			Actions: []Action{Conjunction{ID: 1, Clause: 1, NClauses: 2}, Conjunction{ID: 2, Clause: 1, NClauses: 2}}},
		{Table: testIngress, Priority: 0, Actions: []Action{GotoTable{Table: testOutput}}},
	}
	var got []byte
	for i, f := range flows {
		fm, err := flowMod(f, openflow15.FC_ADD)
		if err != nil {
			t.Fatal(err)
		}
		if got, err = appendBundleAdd(got, fm, 9, bundleFlags, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	rebaseXids(got, 100)
	var want []byte
	for i, f := range flows {
		fm, err := flowMod(f, openflow15.FC_ADD)
		if err != nil {
			t.Fatal(err)
		}
		fm.Xid = uint32(100 + i)
		add := openflow15.NewBndleAdd(9, bundleFlags)
		add.Xid = fm.Xid
		add.Message = fm
		b, err := add.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("appendBundleAdd + rebaseXids:\n%x\nwant (libOpenflow):\n%x", got, want)
	}
}

// TestFlowModEncoding checks wire details that are easy to get wrong; the
// integration test compares everything else with ovs-ofctl.
func TestFlowModEncoding(t *testing.T) {
	f := Flow{Table: testIngress, Priority: 200, Cookie: 0x10,
		Match:   Match{Protocol: ProtoTCP, TpDst: 0x1f90, TpDstMask: 0xfff0},
		Actions: []Action{Conjunction{ID: 10, Clause: 3, NClauses: 3}}}
	fm, err := flowMod(f, openflow15.FC_ADD)
	if err != nil {
		t.Fatal(err)
	}
	if fm.TableId != 3 || fm.Priority != 200 || fm.Cookie != 0x10 || fm.Command != openflow15.FC_ADD {
		t.Errorf("header: table %d priority %d cookie %#x command %d", fm.TableId, fm.Priority, fm.Cookie, fm.Command)
	}
	// Prerequisites first: eth_type, ip_proto, then the masked tcp_dst.
	var got []uint8
	for _, m := range fm.Match.Fields {
		got = append(got, m.Field)
	}
	want := []uint8{openflow15.OXM_FIELD_ETH_TYPE, openflow15.OXM_FIELD_IP_PROTO, openflow15.OXM_FIELD_TCP_DST}
	if string(got) != string(want) {
		t.Errorf("match fields %v, want %v", got, want)
	}
	if tp := fm.Match.Fields[2]; !tp.HasMask || tp.Mask.(*openflow15.PortField).Port != 0xfff0 {
		t.Errorf("tcp_dst mask not set: %+v", tp)
	}
	apply := fm.Instructions[0].(*openflow15.InstrActions)
	conj := apply.Actions[0].(*openflow15.NXActionConjunction)
	if conj.Clause != 2 || conj.NClause != 3 || conj.ID != 10 {
		t.Errorf("conjunction on the wire = clause %d/%d id %d, want 0-based clause 2/3 id 10", conj.Clause, conj.NClause, conj.ID)
	}
	if _, err := fm.MarshalBinary(); err != nil {
		t.Fatalf("marshal: %v", err)
	}

	// A strict delete carries the match but no instructions.
	del, err := flowMod(f, openflow15.FC_DELETE_STRICT)
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Instructions) != 0 || len(del.Match.Fields) != 3 {
		t.Errorf("delete: %d instructions, %d match fields", len(del.Instructions), len(del.Match.Fields))
	}

	// A partial load is a masked set_field of the shifted value.
	load, err := flowMod(Flow{Actions: []Action{LoadReg{Reg: 3, Start: 16, End: 31, Value: 0x11}}}, openflow15.FC_ADD)
	if err != nil {
		t.Fatal(err)
	}
	sf := load.Instructions[0].(*openflow15.InstrActions).Actions[0].(*openflow15.ActionSetField)
	value, _ := sf.Field.Value.MarshalBinary()
	mask, _ := sf.Field.Mask.MarshalBinary()
	if binary.BigEndian.Uint32(value) != 0x110000 || binary.BigEndian.Uint32(mask) != 0xffff0000 {
		t.Errorf("set_field value %x mask %x, want 110000/ffff0000", value, mask)
	}
}

// buildMods collects what forEachMod makes of ch.
func buildMods(ch Changes) ([]*openflow15.FlowMod, error) {
	var mods []*openflow15.FlowMod
	err := forEachMod(ch, func(fm *openflow15.FlowMod) error {
		mods = append(mods, fm)
		return nil
	})
	return mods, err
}

func TestBuildModsOrder(t *testing.T) {
	flow := func(p uint16) Flow { return Flow{Priority: p, Actions: []Action{Normal{}}} }
	replace := Changes{ReplaceAll: true, Add: []Flow{flow(1), flow(2)}}
	if n := countMods(replace); n != 3 {
		t.Errorf("countMods = %d, want 3", n)
	}
	mods, err := buildMods(replace)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 3 || mods[0].Command != openflow15.FC_DELETE || mods[0].TableId != openflow15.OFPTT_ALL {
		t.Fatalf("ReplaceAll must start with a delete of all tables: %+v", mods)
	}
	if got, want := describeMod(replace, 0), "delete all flows"; got != want {
		t.Errorf("describeMod(0) = %q, want %q", got, want)
	}
	if got, want := describeMod(replace, 2), "add "+flow(2).String(); got != want {
		t.Errorf("describeMod(2) = %q, want %q", got, want)
	}
	mixed := Changes{Add: []Flow{flow(1)}, Modify: []Flow{flow(2)}, Delete: []Flow{flow(3)}}
	mods, err = buildMods(mixed)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []uint8
	for _, m := range mods {
		cmds = append(cmds, m.Command)
	}
	if want := []uint8{openflow15.FC_DELETE_STRICT, openflow15.FC_MODIFY_STRICT, openflow15.FC_ADD}; string(cmds) != string(want) {
		t.Errorf("commands %v, want delete, modify, add", cmds)
	}
	for i, want := range []string{"delete " + flow(3).String(), "modify " + flow(2).String(), "add " + flow(1).String()} {
		if got := describeMod(mixed, i); got != want {
			t.Errorf("describeMod(%d) = %q, want %q", i, got, want)
		}
	}
}

// Apply refuses bad input before it connects to anything.
func TestApplyRefusesBadInputWithoutConnecting(t *testing.T) {
	c := NewClient("/nonexistent/br-int.mgmt")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, tc := range []struct {
		ch   Changes
		want string
	}{
		{Changes{ReplaceAll: true, Delete: []Flow{{}}}, "ReplaceAll takes only Add"},
		{Changes{Add: []Flow{{Table: testOutput, Actions: []Action{GotoTable{Table: testIngress}}}}}, "later table"},
	} {
		if err := c.Apply(ctx, tc.ch); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Apply = %v, want an error containing %q", err, tc.want)
		}
	}
	if err := c.Apply(ctx, Changes{}); err != nil {
		t.Errorf("empty Apply = %v, want nil", err)
	}
}

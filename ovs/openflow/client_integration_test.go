//go:build integration

package openflow

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/ovs/ovsconfig"
	"palisade.dev/palisade/test/netnstest"
	"palisade.dev/palisade/test/ovsinstance"
)

var (
	tClassifier = Table{ID: 0, Name: "Classifier"}
	tConntrack  = Table{ID: 1, Name: "Conntrack"}
	tCtState    = Table{ID: 2, Name: "ConntrackState"}
	tIngress    = Table{ID: 3, Name: "IngressRule"}
	tDefault    = Table{ID: 4, Name: "IngressDefault"}
	tOutput     = Table{ID: 5, Name: "Output"}
	allTables   = []Table{tClassifier, tConntrack, tCtState, tIngress, tDefault, tOutput}
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// everyFeatureFlows uses every Match field, protocol and Action type of
// flow.go at least once.
func everyFeatureFlows() []Flow {
	zone := uint16(65520)
	return []Flow{
		{Table: tClassifier, Priority: 200, Cookie: 0x1,
			Match:   Match{InPort: 1, Protocol: ProtoARP, ARPSpa: netip.MustParseAddr("198.18.0.1"), ARPSha: mac("aa:bb:cc:00:00:01")},
			Actions: []Action{Normal{}}},
		{Table: tClassifier, Priority: 190, Cookie: 0x1,
			Match:   Match{Protocol: ProtoARP, IPSrc: netip.MustParsePrefix("198.18.0.0/24"), IPDst: netip.MustParsePrefix("198.18.0.9/32")},
			Actions: []Action{Normal{}}},
		{Table: tClassifier, Priority: 100, Cookie: 0x2,
			Match:   Match{InPort: 2, Protocol: ProtoIP, EthSrc: mac("aa:bb:cc:00:00:02")},
			Actions: []Action{LoadReg{Reg: 0, Start: 0, End: 15, Value: 0x2}, LoadReg{Reg: 2, Start: 0, End: 31, Value: 0xdeadbeef}, GotoTable{Table: tConntrack}}},
		{Table: tClassifier, Priority: 0, Cookie: 0x2},
		{Table: tConntrack, Priority: 100, Cookie: 0x3,
			Match:   Match{Protocol: ProtoIP},
			Actions: []Action{CT{Zone: zone, Table: &tCtState}}},
		{Table: tCtState, Priority: 200, Cookie: 0x3,
			Match:   Match{Protocol: ProtoIP, CtState: CtState{Set: CtEst | CtTrk, Mask: CtEst | CtTrk}},
			Actions: []Action{GotoTable{Table: tOutput}}},
		{Table: tCtState, Priority: 190, Cookie: 0x3,
			Match: Match{CtState: CtState{Set: CtInv | CtTrk, Mask: CtInv | CtTrk}}},
		{Table: tCtState, Priority: 180, Cookie: 0x3,
			Match:   Match{Protocol: ProtoIP, CtState: CtState{Set: CtNew | CtTrk, Mask: CtNew | CtEst | CtRel | CtRpl | CtTrk}},
			Actions: []Action{GotoTable{Table: tIngress}}},
		// A conjunctive rule: from (clause 1), to (clause 2), service (clause 3).
		{Table: tIngress, Priority: 200, Cookie: 0x10,
			Match:   Match{Protocol: ProtoIP, IPSrc: netip.MustParsePrefix("198.18.1.0/24")},
			Actions: []Action{Conjunction{ID: 10, Clause: 1, NClauses: 3}, Conjunction{ID: 11, Clause: 1, NClauses: 2}}},
		{Table: tIngress, Priority: 200, Cookie: 0x10,
			Match:   Match{Protocol: ProtoIP, IPDst: netip.MustParsePrefix("198.18.2.5/32")},
			Actions: []Action{Conjunction{ID: 10, Clause: 2, NClauses: 3}}},
		{Table: tIngress, Priority: 200, Cookie: 0x10,
			Match:   Match{Protocol: ProtoTCP, TpDst: 0x1f90, TpDstMask: 0xfff0},
			Actions: []Action{Conjunction{ID: 10, Clause: 3, NClauses: 3}}},
		{Table: tIngress, Priority: 200, Cookie: 0x11,
			Match:   Match{Protocol: ProtoUDP, TpDst: 53},
			Actions: []Action{Conjunction{ID: 11, Clause: 2, NClauses: 2}}},
		{Table: tIngress, Priority: 200, Cookie: 0x11,
			Match:   Match{Protocol: ProtoSCTP, TpDst: 9000, TpDstMask: 0xffff},
			Actions: []Action{Conjunction{ID: 11, Clause: 2, NClauses: 2}}},
		{Table: tIngress, Priority: 200, Cookie: 0x10,
			Match:   Match{Protocol: ProtoIP, ConjID: 10},
			Actions: []Action{CT{Commit: true, Zone: zone, Exec: []Action{SetCtMark{Value: 0x1}}}, GotoTable{Table: tOutput}}},
		{Table: tIngress, Priority: 200, Cookie: 0x11,
			Match:   Match{ConjID: 11},
			Actions: []Action{LoadReg{Reg: 3, Start: 16, End: 31, Value: 0x11}, GotoTable{Table: tDefault}}},
		{Table: tDefault, Priority: 100, Cookie: 0x20,
			Match:   Match{Protocol: ProtoICMP, Regs: []RegMatch{{Reg: 0, Value: 0x2, Mask: 0xffff}, {Reg: 1, Value: 0x5}}},
			Actions: []Action{Output{Port: 3}}},
		{Table: tDefault, Priority: 50, Cookie: 0x20,
			Match: Match{Protocol: ProtoIP, EthDst: mac("aa:bb:cc:00:00:03")}},
		{Table: tOutput, Priority: 100, Cookie: 0x30,
			Match:   Match{Regs: []RegMatch{{Reg: 1, Value: 0x5, Mask: 0xff}}},
			Actions: []Action{OutputReg{Reg: 1, Start: 0, End: 15}}},
		{Table: tOutput, Priority: 90, Cookie: 0x30,
			Match:   Match{Protocol: ProtoIP, Regs: []RegMatch{{Reg: 4, Value: 0, Mask: 0xffffffff}}},
			Actions: []Action{CT{Commit: true, Zone: zone}, Normal{}}},
		// Rule ids recorded in the connection, and matched on later packets.
		{Table: tOutput, Priority: 70, Cookie: 0x50,
			Match: Match{Protocol: ProtoTCP, CtState: CtState{Set: CtNew | CtTrk, Mask: CtNew | CtTrk}},
			Actions: []Action{CT{Commit: true, Zone: zone, Exec: []Action{
				Move{Src: RegField(2), Dst: FieldCtLabel, NBits: 32},
				Move{Src: RegField(3), Dst: FieldCtLabel, DstOfs: 32, NBits: 32},
				Move{Src: RegField(4), SrcOfs: 16, Dst: FieldCtMark, DstOfs: 8, NBits: 16}}}, Output{Port: 3}}},
		{Table: tOutput, Priority: 60, Cookie: 0x50,
			Match:   Match{Protocol: ProtoIP, CtState: CtState{Set: CtTrk, Mask: CtNew | CtTrk}, CtLabel: CtLabelMatch{Value: 7, Mask: 0xffffffff}},
			Actions: []Action{Move{Src: RegField(3), Dst: RegField(5), DstOfs: 8, NBits: 8}, Output{Port: 3}}},
		{Table: tOutput, Priority: 60, Cookie: 0x50,
			Match:   Match{Protocol: ProtoIP, CtState: CtState{Set: CtTrk, Mask: CtNew | CtTrk}, CtLabel: CtLabelMatch{Value: 9 << 32, Mask: 0xffffffff << 32}},
			Actions: []Action{Output{Port: 3}}},
		// Routing and tunnels: tun_src, arp_tpa, MAC rewrites, dec_ttl, tun_dst.
		{Table: tClassifier, Priority: 180, Cookie: 0x40,
			Match: Match{InPort: 5, Protocol: ProtoIP, TunSrc: netip.MustParseAddr("198.18.0.12"), IPDst: netip.MustParsePrefix("198.19.1.7/32")},
			Actions: []Action{SetEthSrc{MAC: mac("0a:58:c6:13:01:01")}, SetEthDst{MAC: mac("aa:bb:cc:00:00:07")}, DecTTL{},
				GotoTable{Table: tConntrack}}},
		{Table: tClassifier, Priority: 170, Cookie: 0x40,
			Match:   Match{Protocol: ProtoARP, ARPTpa: netip.MustParseAddr("198.19.1.1")},
			Actions: []Action{Output{Port: 2}}},
		{Table: tOutput, Priority: 80, Cookie: 0x40,
			Match:   Match{Protocol: ProtoIP, IPDst: netip.MustParsePrefix("198.19.2.0/24")},
			Actions: []Action{DecTTL{}, SetTunDst{IP: netip.MustParseAddr("198.18.0.12")}, LoadReg{Reg: 0, Start: 4, End: 4, Value: 1}, Output{Port: 5}}},
	}
}

// setup starts a private OVS with bridges br-int (driven by the Client)
// and br-b (driven by ovs-ofctl), both with the test's table names.
func setup(t *testing.T, ctx context.Context) (*ovsinstance.Instance, *Client) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ofc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The daemons run in a network namespace of their own: the bridges'
	// internal ports are devices named like the bridges, which other tests'
	// OVS may also create at the same time.
	ns := netnstest.New(t, "ofc-")
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Netns: ns})
	if err != nil {
		t.Fatalf("start OVS: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("stop OVS: %v", err)
		}
	})
	names := map[uint8]string{}
	for _, tb := range allTables {
		names[tb.ID] = tb.Name
	}
	for _, br := range []string{"br-int", "br-b"} {
		cfg, err := ovsconfig.New(ctx, inst.DBEndpoint, br, "netdev")
		if err != nil {
			t.Fatalf("ovsconfig for %s: %v", br, err)
		}
		err = cfg.EnsureBridge(ctx)
		if err == nil {
			err = cfg.SetTableNames(ctx, names)
		}
		cfg.Close()
		if err != nil {
			t.Fatalf("configure %s: %v", br, err)
		}
	}
	c := NewClient(inst.MgmtSock)
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return inst, c
}

func flowTexts(flows []Flow) []string {
	s := make([]string, len(flows))
	for i, f := range flows {
		s[i] = f.String()
	}
	return s
}

// keyText is a flow's table, priority and match as ovs-ofctl --strict
// commands take it.
func keyText(f Flow) string {
	s := fmt.Sprintf("table=%s,priority=%d", f.Table, f.Priority)
	if m := f.Match.String(); m != "" {
		s += "," + m
	}
	return s
}

func dump(t *testing.T, inst *ovsinstance.Instance, bridge string) []string {
	t.Helper()
	flows, err := inst.DumpFlows(bridge)
	if err != nil {
		t.Fatalf("dump %s: %v", bridge, err)
	}
	return flows
}

// assertSameFlows fails unless br-int (Client) and br-b (ovs-ofctl) hold
// the same flows.
func assertSameFlows(t *testing.T, inst *ovsinstance.Instance, wantN int) {
	t.Helper()
	a, b := dump(t, inst, "br-int"), dump(t, inst, "br-b")
	if diff := cmp.Diff(b, a); diff != "" {
		t.Fatalf("flows installed by Client (+) differ from those installed by ovs-ofctl from String() (-):\n%s", diff)
	}
	if len(a) != wantN {
		t.Fatalf("%d flows on the bridge, want %d:\n%s", len(a), wantN, strings.Join(a, "\n"))
	}
}

func ofctl(t *testing.T, inst *ovsinstance.Instance, args ...string) {
	t.Helper()
	if _, err := inst.OfctlBridge("br-b", args...); err != nil {
		t.Fatalf("%v", err)
	}
}

func TestApplyMatchesOvsOfctl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, c := setup(t, ctx)
	flows := everyFeatureFlows()

	// Add: the same flows through the Client and through ovs-ofctl.
	if err := c.Apply(ctx, Changes{Add: flows}); err != nil {
		t.Fatalf("Apply add: %v", err)
	}
	if err := inst.AddFlows("br-b", flowTexts(flows)); err != nil {
		t.Fatalf("ovs-ofctl add-flows: %v", err)
	}
	assertSameFlows(t, inst, len(flows))
	t.Logf("%d flows, identical through Client and ovs-ofctl:\n%s", len(flows), strings.Join(dump(t, inst, "br-int"), "\n"))

	// Modify and delete.
	mod := flows[15] // IngressDefault icmp flow
	mod.Actions = []Action{Output{Port: 4}, Normal{}}
	mod2 := flows[4] // Conntrack
	mod2.Actions = []Action{CT{Zone: 7, Table: &tIngress}}
	del := []Flow{flows[1], flows[12], flows[18]}
	if err := c.Apply(ctx, Changes{Modify: []Flow{mod, mod2}, Delete: del}); err != nil {
		t.Fatalf("Apply modify/delete: %v", err)
	}
	for _, m := range []Flow{mod, mod2} {
		ofctl(t, inst, "--strict", "mod-flows", keyText(m)+" actions="+m.ActionsString())
	}
	for _, d := range del {
		ofctl(t, inst, "--strict", "del-flows", keyText(d))
	}
	assertSameFlows(t, inst, len(flows)-len(del))
	if got := dump(t, inst, "br-int"); !strings.Contains(strings.Join(got, "\n"), "cookie=0x20, table=IngressDefault, priority=100,icmp,reg0=0x2/0xffff,reg1=0x5 actions=output:4,NORMAL") {
		t.Fatalf("modified flow not found (actions replaced, cookie kept):\n%s", strings.Join(got, "\n"))
	}

	// ReplaceAll.
	keep := []Flow{flows[0], flows[8], flows[13]}
	if err := c.Apply(ctx, Changes{ReplaceAll: true, Add: keep}); err != nil {
		t.Fatalf("Apply ReplaceAll: %v", err)
	}
	ofctl(t, inst, "del-flows")
	if err := inst.AddFlows("br-b", flowTexts(keep)); err != nil {
		t.Fatal(err)
	}
	assertSameFlows(t, inst, len(keep))
}

func TestApplyIsAtomic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, c := setup(t, ctx)
	flows := everyFeatureFlows()
	if err := c.Apply(ctx, Changes{Add: flows}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	before := dump(t, inst, "br-int")

	// OVS refuses conjunction mixed with other actions; our translation
	// lets it through, so this exercises OVS's rejection of one bundle
	// message among several.
	mixed := Flow{Table: tIngress, Priority: 300, Cookie: 0x99,
		Match:   Match{Protocol: ProtoIP, IPSrc: netip.MustParsePrefix("198.18.9.0/24")},
		Actions: []Action{Conjunction{ID: 10, Clause: 1, NClauses: 3}, Output{Port: 1}}}
	good := Flow{Table: tOutput, Priority: 5, Cookie: 0x99, Match: Match{Protocol: ProtoUDP}, Actions: []Action{Normal{}}}
	err := c.Apply(ctx, Changes{Add: []Flow{good, mixed, good}, Delete: flows[:3]})
	if err == nil {
		t.Fatalf("Apply of a bundle with an invalid flow succeeded")
	}
	t.Logf("OVS rejection: %v", err)
	if !strings.Contains(err.Error(), "rejected 1 of 6") || !strings.Contains(err.Error(), "add "+mixed.String()) {
		t.Fatalf("error does not name the rejected flow: %v", err)
	}
	if diff := cmp.Diff(before, dump(t, inst, "br-int")); diff != "" {
		t.Fatalf("a rejected bundle changed the flows:\n%s", diff)
	}

	// Flows our translation refuses never reach OVS.
	for _, bad := range []Flow{
		{Table: tOutput, Priority: 1, Actions: []Action{GotoTable{Table: tIngress}}},
		{Table: tOutput, Priority: 1, Actions: []Action{CT{Commit: true, Exec: []Action{Output{Port: 1}}}}},
		{Table: tOutput, Priority: 1, Match: Match{TpDst: 80}},
		{Table: tOutput, Priority: 1, Match: Match{Regs: []RegMatch{{Reg: 16}}}},
	} {
		err := c.Apply(ctx, Changes{Add: []Flow{good, bad}, Delete: flows})
		if err == nil {
			t.Fatalf("Apply accepted %s", bad)
		}
		t.Logf("refused: %v", err)
	}
	if diff := cmp.Diff(before, dump(t, inst, "br-int")); diff != "" {
		t.Fatalf("a refused change altered the flows:\n%s", diff)
	}

	// A flow refused after the first chunks were already sent (the bundle
	// is open) is discarded with them, on the same connection; so is one
	// too large for an OpenFlow message.
	many := make([]Flow, 4000)
	for i := range many {
		many[i] = Flow{Table: tOutput, Priority: 10, Cookie: 0x98, Match: Match{Protocol: ProtoUDP, TpDst: uint16(i + 1)}, Actions: []Action{Normal{}}}
	}
	huge := make([]Action, 5000)
	for i := range huge {
		huge[i] = Conjunction{ID: uint32(i + 1), Clause: 1, NClauses: 2}
	}
	encoded := make(chan encodedChunk, 100)
	go encodeBundle(Changes{Add: many}, 1, encoded, make(chan struct{}))
	chunks := 0
	for range encoded {
		chunks++
	}
	if chunks < 2 {
		t.Fatalf("%d flows encode into %d chunk(s); the test needs the bad flow after the first", len(many), chunks)
	}
	gen := c.gen
	for _, bad := range []Flow{
		{Table: tOutput, Priority: 1, Match: Match{TpDst: 80}},
		{Table: tIngress, Priority: 1, Match: Match{Protocol: ProtoIP}, Actions: huge},
	} {
		err := c.Apply(ctx, Changes{Add: append(slices.Clone(many), bad), Delete: flows})
		if err == nil {
			t.Fatalf("Apply accepted %.100s", bad)
		}
		t.Logf("refused after %d flows: %.300v", len(many), err)
	}
	if diff := cmp.Diff(before, dump(t, inst, "br-int")); diff != "" {
		t.Fatalf("a change refused after its first chunks altered the flows:\n%s", diff)
	}
	if c.gen != gen {
		t.Fatalf("a flow refused in a later chunk made the client reconnect")
	}
	if err := c.Apply(ctx, Changes{Add: many}); err != nil {
		t.Fatalf("Apply of %d flows after the refusals: %v", len(many), err)
	}
	if got := len(dump(t, inst, "br-int")); got != len(before)+len(many) {
		t.Fatalf("%d flows after adding %d to %d", got, len(many), len(before))
	}
	if err := c.Apply(ctx, Changes{Delete: many}); err != nil {
		t.Fatalf("Apply deleting them again: %v", err)
	}

	// The client reconnects after ovs-vswitchd restarts (which drops all flows).
	if err := inst.Restart(ctx); err != nil {
		t.Fatalf("restart OVS: %v", err)
	}
	if err := c.Apply(ctx, Changes{ReplaceAll: true, Add: flows}); err != nil {
		t.Fatalf("Apply after an OVS restart: %v", err)
	}
	if diff := cmp.Diff(before, dump(t, inst, "br-int")); diff != "" {
		t.Fatalf("flows after restart differ:\n%s", diff)
	}
}

func TestFlowStats(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, c := setup(t, ctx)
	counted := Flow{Table: tClassifier, Priority: 300, Cookie: 0x7000000000005, Match: Match{Protocol: ProtoUDP}}
	other := Flow{Table: tClassifier, Priority: 300, Cookie: 0x7000000000006, Match: Match{Protocol: ProtoTCP}}
	elsewhere := Flow{Table: tOutput, Priority: 300, Cookie: 0x7000000000005, Match: Match{Protocol: ProtoUDP}}
	if err := c.Apply(ctx, Changes{Add: append(everyFeatureFlows(), counted, other, elsewhere)}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// A 42-byte UDP packet from 198.18.0.1 to 198.18.0.2, three times
	// through the pipeline.
	const udp = "0a00000000010a00000000020800" + "4500001c000000004011" + "0000c6120001c6120002" + "0035003500080000"
	for range 3 {
		if _, err := inst.OfctlBridge("br-int", "packet-out", "in_port=controller packet="+udp+" actions=table"); err != nil {
			t.Fatalf("packet-out: %v", err)
		}
	}
	got, err := c.FlowStats(ctx, tClassifier.ID, 0x7000000000000, 0xff000000000000)
	if err != nil {
		t.Fatalf("FlowStats: %v", err)
	}
	want := map[uint64]FlowStat{
		counted.Cookie: {Table: tClassifier.ID, Priority: 300, Cookie: counted.Cookie, Packets: 3, Bytes: 3 * 42},
		other.Cookie:   {Table: tClassifier.ID, Priority: 300, Cookie: other.Cookie},
	}
	gotByCookie := map[uint64]FlowStat{}
	for _, s := range got {
		gotByCookie[s.Cookie] = s
	}
	if diff := cmp.Diff(want, gotByCookie); diff != "" {
		t.Fatalf("FlowStats(table %d, cookie 0x7/0xff<<48) (-want +got):\n%s", tClassifier.ID, diff)
	}
	all, err := c.FlowStats(ctx, AllTables, 0, 0)
	if err != nil {
		t.Fatalf("FlowStats of all tables: %v", err)
	}
	if n := len(everyFeatureFlows()) + 3; len(all) != n {
		t.Fatalf("FlowStats of all tables returned %d flows, want %d", len(all), n)
	}
	t.Logf("counters of the UDP flow: %+v", gotByCookie[counted.Cookie])
}

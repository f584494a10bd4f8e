package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// recorder is a FlowApplier that keeps a bridge's flows in memory and can be
// told to refuse the next bundle.
type recorder struct {
	flows   map[string]of.Flow
	applied []of.Changes
	fail    bool
	// failAfter applies the next bundle, then fails (as a datapath flush
	// that fails after OVS committed the bundle does).
	failAfter bool
}

func (r *recorder) Apply(_ context.Context, ch of.Changes) error {
	if r.fail {
		r.fail = false
		return errors.New("bundle refused")
	}
	if r.failAfter {
		r.failAfter = false
		r.fail = false
		_ = r.Apply(context.Background(), ch)
		return errors.New("applied, then flushing the datapath cache failed")
	}
	r.applied = append(r.applied, ch)
	if ch.ReplaceAll {
		r.flows = map[string]of.Flow{}
	}
	for _, f := range ch.Delete {
		delete(r.flows, f.Key())
	}
	for _, f := range append(ch.Modify, ch.Add...) {
		r.flows[f.Key()] = f
	}
	return nil
}

func testPod(name string, port int32) interfacestore.PodInterface {
	return interfacestore.PodInterface{PodNamespace: "x", PodName: name, OFPort: port,
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(port)}, IP: netip.AddrFrom4([4]byte{198, 19, 0, byte(port)})}
}

func denyAll(pods ...string) *cp.NodeState {
	st := cp.NewNodeState()
	var ms []cp.GroupMember
	for _, p := range pods {
		ms = append(ms, cp.GroupMember{Pod: cp.PodReference{Namespace: "x", Name: p}})
	}
	st.AppliedToGroups["g"] = &cp.AppliedToGroup{Name: "g", Members: ms}
	st.Policies["p"] = &cp.NetworkPolicy{Name: "p", AppliedToGroups: []string{"g"}, PolicyTypes: []string{"Ingress"}}
	return st
}

func sameFlows(t *testing.T, bridge map[string]of.Flow, dp *Datapath) {
	t.Helper()
	got := dp.Flows()
	if len(got) != len(bridge) {
		t.Fatalf("cache has %d flows, bridge %d", len(got), len(bridge))
	}
	for _, f := range got {
		if b, ok := bridge[f.Key()]; !ok || b.String() != f.String() {
			t.Fatalf("cache and bridge differ at %s", f)
		}
	}
}

func TestStartReplacesAllThenDiffs(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{"stale": {}}}
	dp := New(r)
	if err := dp.AddPod(ctx, testPod("a", 2)); err != nil {
		t.Fatal(err)
	}
	if len(r.applied) != 0 {
		t.Fatalf("changes applied before Start: %v", r.applied)
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.applied) != 1 || !r.applied[0].ReplaceAll {
		t.Fatalf("Start must apply one ReplaceAll bundle, got %+v", r.applied)
	}
	if _, ok := r.flows["stale"]; ok {
		t.Fatal("stale flow survived Start")
	}
	sameFlows(t, r.flows, dp)

	if err := dp.AddPod(ctx, testPod("b", 3)); err != nil {
		t.Fatal(err)
	}
	last := r.applied[len(r.applied)-1]
	if last.ReplaceAll || len(last.Add) != 5 || len(last.Delete) != 0 || len(last.Modify) != 0 {
		t.Fatalf("adding a pod should add its 5 flows only, got add=%d mod=%d del=%d", len(last.Add), len(last.Modify), len(last.Delete))
	}
	if err := dp.SetPolicy(ctx, denyAll("b")); err != nil {
		t.Fatal(err)
	}
	sameFlows(t, r.flows, dp)
	if err := dp.SetPolicy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := dp.DeletePod(ctx, testPod("b", 3)); err != nil {
		t.Fatal(err)
	}
	sameFlows(t, r.flows, dp)
}

func TestRefusedBundleChangesNothing(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dp.AddPod(ctx, testPod("a", 2)); err != nil {
		t.Fatal(err)
	}
	before := len(dp.Flows())
	r.fail = true
	if err := dp.SetPolicy(ctx, denyAll("a")); err == nil {
		t.Fatal("expected the refused bundle to be reported")
	}
	if len(dp.Flows()) != before {
		t.Fatal("the cache changed although OVS refused the bundle")
	}
	sameFlows(t, r.flows, dp)
	// The retry applies the same change in full.
	if err := dp.SetPolicy(ctx, denyAll("a")); err != nil {
		t.Fatal(err)
	}
	sameFlows(t, r.flows, dp)
	if len(dp.Flows()) != before+1 {
		t.Fatalf("deny-all should add one default drop: %d -> %d", before, len(dp.Flows()))
	}
}

// TestApplyFailedAfterCommitHeals: a bundle OVS took although Apply
// failed (the datapath flush after it failed) leaves flows the cache does
// not know; the next sync replaces everything, so a later deny-all does
// not leave the earlier allow's flows on the bridge.
func TestApplyFailedAfterCommitHeals(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []interfacestore.PodInterface{testPod("a", 2), testPod("b", 3)} {
		if err := dp.AddPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	r.failAfter = true
	if err := dp.SetPolicy(ctx, sharedRules(1)); err == nil {
		t.Fatal("the failed Apply was not reported")
	}
	// The state changes before the retry (the agent syncs its latest).
	if err := dp.SetPolicy(ctx, denyAll("b")); err != nil {
		t.Fatal(err)
	}
	if last := r.applied[len(r.applied)-1]; !last.ReplaceAll {
		t.Errorf("the sync after a failed Apply was a diff, not a ReplaceAll")
	}
	sameFlows(t, r.flows, dp)
	for k, f := range r.flows {
		if len(f.Actions) > 0 && strings.Contains(f.String(), "conjunction(") {
			t.Errorf("the earlier policy's flow %s is still on the bridge", k)
		}
	}
}

func TestNetworkAndRemoteNodes(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	bad := &openflow.NodeNetwork{PodCIDR: netip.MustParsePrefix("198.19.0.0/24")}
	if err := dp.SetNetwork(ctx, bad); err == nil {
		t.Fatal("SetNetwork accepted a network without a gateway")
	}
	n := &openflow.NodeNetwork{PodCIDR: netip.MustParsePrefix("198.19.0.0/24"), GatewayPort: 1,
		GatewayIP: netip.MustParseAddr("198.19.0.1"), GatewayMAC: net.HardwareAddr{0x0a, 0x58, 198, 19, 0, 1}, TunnelPort: 9}
	if err := dp.SetNetwork(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.GatewayPort = 7 // the datapath keeps its own copy
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	base := len(dp.Flows())
	if err := dp.AddPod(ctx, testPod("a", 2)); err != nil {
		t.Fatal(err)
	}
	if got := len(dp.Flows()) - base; got != 6 {
		t.Fatalf("a pod on a node with a tunnel has %d flows, want 6 (5 + delivery from the tunnel)", got)
	}
	withPod := len(dp.Flows())
	node := func(i byte) openflow.RemoteNode {
		return openflow.RemoteNode{Name: "node" + string('0'+i), IP: netip.AddrFrom4([4]byte{198, 18, 0, 10 + i}),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, i, 0}), 24)}
	}
	if err := dp.SetRemoteNodes(ctx, []openflow.RemoteNode{node(3), node(2)}); err != nil {
		t.Fatal(err)
	}
	if got := len(dp.Flows()) - withPod; got != 4 {
		t.Fatalf("two remote nodes added %d flows, want 4", got)
	}
	// The same nodes in another order change nothing.
	applied := len(r.applied)
	if err := dp.SetRemoteNodes(ctx, []openflow.RemoteNode{node(2), node(3)}); err != nil {
		t.Fatal(err)
	}
	if len(r.applied) != applied {
		t.Fatalf("reordered nodes applied a change: %+v", r.applied[applied:])
	}
	if err := dp.SetRemoteNodes(ctx, []openflow.RemoteNode{node(2)}); err != nil {
		t.Fatal(err)
	}
	last := r.applied[len(r.applied)-1]
	if len(last.Add) != 0 || len(last.Modify) != 0 || len(last.Delete) != 2 {
		t.Fatalf("a node leaving: add=%d mod=%d del=%d, want its 2 flows deleted", len(last.Add), len(last.Modify), len(last.Delete))
	}
	sameFlows(t, r.flows, dp)
	if got := dp.RemoteNodes(); len(got) != 1 || got[0] != node(2) {
		t.Fatalf("RemoteNodes() = %v, want node2 only", got)
	}
	for _, f := range dp.Flows() {
		if f.Match.InPort == 7 {
			t.Fatalf("the caller's later change of the network leaked into the flows: %s", f)
		}
	}
}

func TestRoundInEveryCookie(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	dp.SetRound(3)
	if err := dp.AddPod(ctx, testPod("a", 2)); err != nil {
		t.Fatal(err)
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetPolicy(ctx, denyAll("a")); err != nil {
		t.Fatal(err)
	}
	for _, f := range r.flows {
		if f.Cookie&openflow.CookieRoundMask != 3<<openflow.CookieRoundShift {
			t.Fatalf("flow without round 3 in its cookie: %s", f)
		}
	}
	sameFlows(t, r.flows, dp)
}

func TestSameActions(t *testing.T) {
	ingress := openflow.IngressRuleTable
	for _, tc := range []struct {
		name string
		a, b []of.Action
	}{
		{"both empty", nil, []of.Action{}},
		{"conjunctions", []of.Action{of.Conjunction{ID: 1, Clause: 1, NClauses: 2}}, []of.Action{of.Conjunction{ID: 1, Clause: 1, NClauses: 2}}},
		{"other conjunction", []of.Action{of.Conjunction{ID: 1, Clause: 1, NClauses: 2}}, []of.Action{of.Conjunction{ID: 1, Clause: 2, NClauses: 2}}},
		{"load and goto", []of.Action{of.LoadReg{Reg: 3, End: 31, Value: 7}, of.GotoTable{Table: ingress}},
			[]of.Action{of.LoadReg{Reg: 3, End: 31, Value: 7}, of.GotoTable{Table: ingress}}},
		{"other load", []of.Action{of.LoadReg{Reg: 3, End: 31, Value: 7}}, []of.Action{of.LoadReg{Reg: 3, End: 31, Value: 8}}},
		{"different types", []of.Action{of.Output{Port: 1}}, []of.Action{of.OutputReg{Reg: 1, End: 31}}},
		{"ct by text", []of.Action{of.CT{Commit: true, Zone: 1, Exec: []of.Action{of.SetCtMark{Value: 1}}}},
			[]of.Action{of.CT{Commit: true, Zone: 1, Exec: []of.Action{of.SetCtMark{Value: 1}}}}},
		{"other ct", []of.Action{of.CT{Zone: 1}}, []of.Action{of.CT{Zone: 2}}},
		{"lengths", []of.Action{of.Normal{}}, []of.Action{of.Normal{}, of.Normal{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := (&of.Flow{Actions: tc.a}).ActionsString() == (&of.Flow{Actions: tc.b}).ActionsString()
			if got := sameActions(tc.a, tc.b); got != want {
				t.Errorf("sameActions = %v, want %v (the ovs-ofctl texts compare so)", got, want)
			}
		})
	}
}

// sharedRules has n ingress policies allowing TCP 80 from pod a to pod b:
// every rule shares all its clause flows.
func sharedRules(n int) *cp.NodeState {
	st := cp.NewNodeState()
	a := cp.GroupMember{Pod: cp.PodReference{Namespace: "x", Name: "a"}, IPs: []string{"198.19.0.2"}}
	st.AppliedToGroups["b"] = &cp.AppliedToGroup{Name: "b", Members: []cp.GroupMember{{Pod: cp.PodReference{Namespace: "x", Name: "b"}}}}
	st.AddressGroups["a"] = &cp.AddressGroup{Name: "a", Members: []cp.GroupMember{a}}
	for i := range n {
		name := fmt.Sprintf("p%05d", i)
		st.Policies[name] = &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{"b"}, PolicyTypes: []string{"Ingress"},
			Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"a"}},
				Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}}}}
	}
	return st
}

// TestBandsChangeThroughDiff grows and shrinks a set of rules that share
// their clause flows across the point where the rule table takes a second
// priority band and back: each step's bundle leaves the bridge with
// exactly the rendered flows, none too large for an OpenFlow message.
func TestBandsChangeThroughDiff(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	for _, p := range []interfacestore.PodInterface{testPod("a", 2), testPod("b", 3)} {
		if err := dp.AddPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		rules, priorities int
	}{{2000, 1}, {4100, 3}, {2001, 2}, {1999, 1}} {
		if err := dp.SetPolicy(ctx, sharedRules(step.rules)); err != nil {
			t.Fatalf("%d rules: %v", step.rules, err)
		}
		sameFlows(t, r.flows, dp)
		prios, most := map[uint16]bool{}, 0
		for _, f := range r.flows {
			if f.Table == openflow.IngressRuleTable && f.Match.ConjID != 0 {
				prios[f.Priority] = true
			}
			most = max(most, len(f.Actions))
		}
		if len(prios) != step.priorities || most > 4000 {
			t.Fatalf("%d rules: conj_id flows at priorities %v, want %d; a flow with %d actions", step.rules, prios, step.priorities, most)
		}
		last := r.applied[len(r.applied)-1]
		t.Logf("%d rules: %d flows at priorities %v, at most %d actions; bundle added %d, modified %d, deleted %d",
			step.rules, len(r.flows), prios, most, len(last.Add), len(last.Modify), len(last.Delete))
	}
}

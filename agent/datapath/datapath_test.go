package datapath

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// recorder is a FlowApplier that keeps a bridge's flows in memory and can be
// told to refuse the next bundle.
type recorder struct {
	flows   map[string]of.Flow
	applied []of.Changes
	fail    bool
}

func (r *recorder) Apply(_ context.Context, ch of.Changes) error {
	if r.fail {
		r.fail = false
		return errors.New("bundle refused")
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
	if last.ReplaceAll || len(last.Add) != 4 || len(last.Delete) != 0 || len(last.Modify) != 0 {
		t.Fatalf("adding a pod should add its 4 flows only, got add=%d mod=%d del=%d", len(last.Add), len(last.Modify), len(last.Delete))
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

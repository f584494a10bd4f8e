package datapath

import (
	"context"
	"errors"
	"math"
	"testing"

	"palisade.dev/palisade/agent/interfacestore"
	of "palisade.dev/palisade/ovs/openflow"
)

// TestPoliciesComputedOncePerChange checks that the realizations are
// computed once per change and shared by every reader until the next.
func TestPoliciesComputedOncePerChange(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	for _, p := range []interfacestore.PodInterface{testPod("a", 2), testPod("b", 3)} {
		if err := dp.AddPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := dp.SetPolicy(ctx, sharedRules(3)); err != nil {
		t.Fatal(err)
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := dp.Policies()
	if len(first) != 3 || len(first[0].Rules) != 1 {
		t.Fatalf("Policies() = %+v, want 3 policies of one rule", first)
	}
	if again := dp.Policies(); &again[0] != &first[0] {
		t.Error("a second Policies() without a change computed the realizations again")
	}
	if dp.realization() != dp.realization() {
		t.Error("Stats and Policies do not share one realization")
	}
	if err := dp.SetPolicy(ctx, sharedRules(4)); err != nil {
		t.Fatal(err)
	}
	if got := dp.Policies(); len(got) != 4 {
		t.Fatalf("after a change to 4 policies, Policies() has %d", len(got))
	}
	rules := dp.realization().rules
	if len(rules) != 4 {
		t.Errorf("rules by conjunction id = %v, want 4", rules)
	}
	if n := dp.FlowCount(); n != len(r.flows) || n != len(dp.Flows()) {
		t.Errorf("FlowCount() = %d; bridge has %d, Flows() %d", n, len(r.flows), len(dp.Flows()))
	}
}

// TestConjIDsDoNotWrap: conj_id 0 would be a rule flow every packet
// matches. A sync that needs more ids than uint32 has fails and changes
// nothing; the last id is still usable.
func TestConjIDsDoNotWrap(t *testing.T) {
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
	dp.mu.Lock()
	dp.nextID = math.MaxUint32 - 1
	dp.mu.Unlock()
	if err := dp.SetPolicy(ctx, sharedRules(2)); err != nil {
		t.Fatalf("allocating the last two ids: %v", err)
	}
	ids := map[uint32]bool{}
	for id := range dp.realization().rules {
		ids[id] = true
	}
	if !ids[math.MaxUint32-1] || !ids[math.MaxUint32] {
		t.Fatalf("conjunction ids %v, want the last two", ids)
	}
	before := len(r.applied)
	flows := dp.Flows()
	err := dp.SetPolicy(ctx, sharedRules(3))
	if !errors.Is(err, errConjIDsExhausted) {
		t.Fatalf("a third rule with no id left: %v, want %v", err, errConjIDsExhausted)
	}
	if len(r.applied) != before || len(dp.Flows()) != len(flows) || len(dp.Policies()) != 2 {
		t.Errorf("the failed sync changed the bridge or the cache")
	}
}

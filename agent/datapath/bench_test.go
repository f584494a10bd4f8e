package datapath

import (
	"context"
	"testing"

	"palisade.dev/palisade/agent/openflow/openflowtest"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// discard is a FlowApplier that accepts every change and counts flows.
type discard struct{ changed int }

func (d *discard) Apply(_ context.Context, ch of.Changes) error {
	d.changed += len(ch.Add) + len(ch.Modify) + len(ch.Delete)
	return nil
}

// BenchmarkSync10kRulesOneChange is an incremental sync on a node of 10k
// rules (the shape of BenchmarkReconcile10kRules, about 96k flows): one
// address group gains a member, or loses it again. It measures rendering
// and the diff against the installed flows, without OVS.
func BenchmarkSync10kRulesOneChange(b *testing.B) { benchmarkSyncOneChange(b, false) }

// BenchmarkSync10kRulesOneChangeCopied is BenchmarkSync10kRulesOneChange
// with every state a deep copy, as the agent's policy cache hands them
// over: no policy or group is the same object as in the previous state.
// The copies are made outside the timer.
func BenchmarkSync10kRulesOneChangeCopied(b *testing.B) { benchmarkSyncOneChange(b, true) }

func benchmarkSyncOneChange(b *testing.B, copied bool) {
	ctx := context.Background()
	st := openflowtest.StateOf(openflowtest.Shape{Rules: 10000, Peers: 10, Targets: 10, Spread: true})
	applier := &discard{}
	dp := New(applier)
	if err := dp.SetPolicy(ctx, st.Policy); err != nil {
		b.Fatal(err)
	}
	for _, p := range st.Pods {
		if err := dp.AddPod(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	if err := dp.Start(ctx); err != nil {
		b.Fatal(err)
	}
	ag := st.Policy.AddressGroups["ag-0"]
	members := ag.Members
	extra := cp.GroupMember{Pod: cp.PodReference{Namespace: "peers", Name: "extra"},
		IPs: []string{openflowtest.Addr(openflowtest.MaxPeers - 100).String()}}
	b.ReportAllocs()
	applier.changed = 0
	i := 0
	for b.Loop() {
		next := *st.Policy
		next.AddressGroups = map[string]*cp.AddressGroup{}
		for k, v := range st.Policy.AddressGroups {
			next.AddressGroups[k] = v
		}
		g := *ag
		if i%2 == 0 {
			g.Members = append(members[:len(members):len(members)], extra)
		} else {
			g.Members = members
		}
		next.AddressGroups["ag-0"] = &g
		st := &next
		if copied {
			b.StopTimer()
			st = st.DeepCopy()
			b.StartTimer()
		}
		if err := dp.SetPolicy(ctx, st); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(len(dp.Flows())), "flows")
	b.ReportMetric(float64(applier.changed)/float64(b.N), "changes/op")
}

package openflow_test

import (
	"testing"

	"palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/agent/openflow/openflowtest"
)

// BenchmarkRender100Rules500Addresses renders the whole table of a node
// with 10 local pods and 100 rules of 500 peer addresses each.
func BenchmarkRender100Rules500Addresses(b *testing.B) {
	st := openflowtest.State(100, 500, 10, false)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		ids := map[string]uint32{}
		flows, err := openflow.Render(st, func(k string) uint32 {
			if _, ok := ids[k]; !ok {
				ids[k] = uint32(len(ids) + 1)
			}
			return ids[k]
		})
		if err != nil {
			b.Fatal(err)
		}
		n = len(flows)
	}
	b.ReportMetric(float64(n), "flows")
}

// BenchmarkFirstUpdate10kRules renders the 10k-rule node of
// BenchmarkReconcile10kRules (agent/datapath) from nothing: with Render,
// and with an Incremental's first Update, which also indexes every flow by
// policy and key for the updates after it (what agent/datapath's Start
// and Resync pay).
func BenchmarkFirstUpdate10kRules(b *testing.B) {
	st := openflowtest.StateOf(openflowtest.Shape{Rules: 10000, Peers: 10, Targets: 10, Spread: true})
	counter := func() openflow.ConjIDs {
		ids := map[string]uint32{}
		return func(k string) uint32 {
			if _, ok := ids[k]; !ok {
				ids[k] = uint32(len(ids) + 1)
			}
			return ids[k]
		}
	}
	b.Run("Render", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := openflow.Render(st, counter()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Incremental", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var inc openflow.Incremental
			if _, err := inc.Update(st, counter()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

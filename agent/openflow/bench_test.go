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

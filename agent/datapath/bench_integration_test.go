//go:build integration

package datapath_test

import (
	"context"
	"os"
	"testing"
	"time"

	"palisade.dev/palisade/agent/datapath"
	aof "palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/agent/openflow/openflowtest"
	"palisade.dev/palisade/ovs/openflow"
	"palisade.dev/palisade/ovs/ovsconfig"
	"palisade.dev/palisade/test/ovsinstance"
)

// benchBridge starts a private OVS with the pipeline's named bridge and
// returns a connected OpenFlow client.
func benchBridge(b *testing.B) *openflow.Client {
	b.Helper()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "palbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	// A bridge name of its own: a br-int device may exist in this namespace.
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Bridge: "br-bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = inst.Stop() })
	br, err := ovsconfig.New(ctx, inst.DBEndpoint, inst.Bridge, "netdev")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	if err := br.EnsureBridge(ctx); err != nil {
		b.Fatal(err)
	}
	if err := br.SetTableNames(ctx, aof.TableNames()); err != nil {
		b.Fatal(err)
	}
	ofc := openflow.NewClient(inst.MgmtSock)
	if err := ofc.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ofc.Close)
	return ofc
}

// startAndTime installs st through a new Datapath (Render, then one
// ReplaceAll bundle) and reports flows and flows/s.
func startAndTime(b *testing.B, ofc *openflow.Client, st aof.State) {
	ctx := context.Background()
	var flows int
	var total time.Duration
	for b.Loop() {
		dp := datapath.New(ofc)
		if err := dp.SetPolicy(ctx, st.Policy); err != nil {
			b.Fatal(err)
		}
		for _, p := range st.Pods {
			if err := dp.AddPod(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		if err := dp.Start(ctx); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		flows = len(dp.Flows())
	}
	b.ReportMetric(float64(flows), "flows")
	b.ReportMetric(float64(flows)*float64(b.N)/total.Seconds(), "flows/s")
}

// BenchmarkInstallFlows installs about 131k flows into a real ovs-vswitchd
// through the agent's own path: 100 ingress and 100 egress rules of 655
// peer addresses each. (198.18.0.0/15 holds 65,536 addresses no two of which
// merge into one prefix, so that is the most distinct /32 peer flows one
// table can get without leaving the range.)
func BenchmarkInstallFlows(b *testing.B) {
	ofc := benchBridge(b)
	st := openflowtest.Merge(openflowtest.State(100, 655, 2, false), openflowtest.State(100, 655, 2, true))
	startAndTime(b, ofc, st)
}

// BenchmarkReconcile10kRules is an agent restart with 10k rules (10 peers
// each, 10 local pods): the complete table rendered and installed in one
// bundle that also replaces what the previous agent left.
func BenchmarkReconcile10kRules(b *testing.B) {
	ofc := benchBridge(b)
	startAndTime(b, ofc, openflowtest.State(10000, 10, 10, false))
}

//go:build integration

package datapath_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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
// returns it with a connected OpenFlow client.
func benchBridge(b *testing.B) (*ovsinstance.Instance, *openflow.Client) {
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
	return inst, ofc
}

// vswitchdCPU returns the CPU time ovs-vswitchd has used so far (user and
// system, at the kernel's clock tick resolution, usually 10 ms).
func vswitchdCPU(b *testing.B, inst *ovsinstance.Instance) time.Duration {
	b.Helper()
	pid, err := os.ReadFile(filepath.Join(inst.Dir, "vswitchd.pid"))
	if err != nil {
		b.Fatal(err)
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strings.TrimSpace(string(pid)), "stat"))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which ends with the last ')'):
	// state is the first, utime and stime the 12th and 13th.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		b.Fatalf("unexpected /proc stat %q", stat)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			b.Fatalf("unexpected /proc stat %q: %v", stat, err)
		}
		ticks += n
	}
	const clockTicks = 100 // sysconf(_SC_CLK_TCK) on Linux
	return time.Duration(ticks) * time.Second / clockTicks
}

// startAndTime installs st through a new Datapath (Render, then one
// ReplaceAll bundle) and reports flows, flows/s, and the parts of Start:
// render-ms (Render alone, timed in a separate call), and ovs-cpu-ms, the
// CPU time ovs-vswitchd spent during Start.
func startAndTime(b *testing.B, inst *ovsinstance.Instance, ofc *openflow.Client, st aof.State) {
	ctx := context.Background()
	var flows int
	var total, render, ovsCPU time.Duration
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
		if _, err := aof.Render(st, counter()); err != nil {
			b.Fatal(err)
		}
		render += time.Since(start)
		runtime.GC() // do not charge Start with the garbage of the call above

		cpu := vswitchdCPU(b, inst)
		start = time.Now()
		if err := dp.Start(ctx); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		ovsCPU += vswitchdCPU(b, inst) - cpu
		flows = len(dp.Flows())
	}
	b.ReportMetric(float64(flows), "flows")
	b.ReportMetric(float64(flows)*float64(b.N)/total.Seconds(), "flows/s")
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "start-ms")
	b.ReportMetric(render.Seconds()*1000/float64(b.N), "render-ms")
	b.ReportMetric(ovsCPU.Seconds()*1000/float64(b.N), "ovs-cpu-ms")
}

// counter gives conjunction ids in the order keys are first seen.
func counter() aof.ConjIDs {
	ids := map[string]uint32{}
	return func(k string) uint32 {
		if _, ok := ids[k]; !ok {
			ids[k] = uint32(len(ids) + 1)
		}
		return ids[k]
	}
}

// install200k is about 208k distinct flows: 1,000 ingress and 1,000 egress
// rules on 2 local pods, each rule with 65 peer addresses of its own and 12
// TCP, 12 UDP and 12 SCTP ports of its own. Per direction that is 65,000
// peer clause flows (198.18.0.0/15 holds 65,536 addresses no two of which
// merge into one prefix, so a table cannot get more distinct /32 peer
// flows), 36,000 service clause flows, and 3,000 conjunction and metric
// flows.
func install200k() aof.State {
	shape := openflowtest.Shape{Rules: 1000, Peers: 65, Targets: 2, PortsPerProtocol: 12}
	in := openflowtest.StateOf(shape)
	shape.Egress = true
	return openflowtest.Merge(in, openflowtest.StateOf(shape))
}

// BenchmarkInstallFlows installs about 208k flows (install200k) into a real
// ovs-vswitchd through the agent's own path.
func BenchmarkInstallFlows(b *testing.B) {
	inst, ofc := benchBridge(b)
	startAndTime(b, inst, ofc, install200k())
}

// reconcile10k is a node with 10k ingress rules of 10 peers each and 10
// local pods; rule r applies to pod r%10 and allows TCP port 8000+r%100,
// so a pod's clause flow carries 1,000 rules' conjunctions and a port's
// 100. (One clause flow shared by all 10k rules would not fit in an
// OpenFlow message: see ovs/openflow's maxMessageLen.) The 100k peers wrap
// around the 65,536 addresses, so most addresses are peers of two rules.
func reconcile10k() aof.State {
	return openflowtest.StateOf(openflowtest.Shape{Rules: 10000, Peers: 10, Targets: 10, Spread: true})
}

// BenchmarkReconcile10kRules is an agent restart with 10k rules
// (reconcile10k): the complete table rendered and installed in one bundle
// that also replaces what the previous agent left.
func BenchmarkReconcile10kRules(b *testing.B) {
	inst, ofc := benchBridge(b)
	startAndTime(b, inst, ofc, reconcile10k())
}

// BenchmarkReconcile10kRulesOfctl is OVS's share of the reconcile: the
// same flows, as text, replace the bridge's flows in one bundle through
// `ovs-ofctl --bundle add-flows` (which parses the text and encodes the
// messages itself).
func BenchmarkReconcile10kRulesOfctl(b *testing.B) {
	inst, _ := benchBridge(b)
	flows, err := aof.Render(reconcile10k(), counter())
	if err != nil {
		b.Fatal(err)
	}
	lines := make([]string, 0, len(flows)+1)
	lines = append(lines, "delete") // every flow of every table, as ReplaceAll
	for _, f := range flows {
		lines = append(lines, f.String())
	}
	var total, ovsCPU time.Duration
	for b.Loop() {
		cpu := vswitchdCPU(b, inst)
		start := time.Now()
		if err := inst.AddFlows(inst.Bridge, lines); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		ovsCPU += vswitchdCPU(b, inst) - cpu
	}
	got, err := inst.DumpFlows(inst.Bridge)
	if err != nil {
		b.Fatal(err)
	}
	if len(got) != len(flows) {
		b.Fatalf("OVS has %d flows, want %d", len(got), len(flows))
	}
	b.ReportMetric(float64(len(flows)), "flows")
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "ofctl-ms")
	b.ReportMetric(ovsCPU.Seconds()*1000/float64(b.N), "ovs-cpu-ms")
}

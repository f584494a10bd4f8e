//go:build integration

package datapath_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	aof "palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/ovs/openflow"
	"palisade.dev/palisade/ovs/ovsctl"
)

// TestIntegrationManyRulesShareClauses installs 5,000 ingress rules that
// all allow traffic from pod a to pod b through the agent's own path: one
// clause flow per shared match would carry 5,000 conjunction actions, more
// than an OpenFlow message holds, so the rules take priority bands. Only
// the last rule allows TCP 80, the others TCP 8080. OVS's classifier must
// fall through the higher bands, where the peer and target clauses match
// but no conjunction completes, to the last rule's band: checked with
// ofproto/trace, with a real TCP connection and with the rule id conntrack
// records.
func TestIntegrationManyRulesShareClauses(t *testing.T) {
	const rules = 5000
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	inst, br, _, dp := startTestBridge(t, ctx, "bd")
	a := newTestPod(t, ctx, br, "ba", netip.MustParseAddr("198.19.0.22"))
	b := newTestPod(t, ctx, br, "bb", netip.MustParseAddr("198.19.0.23"))
	for _, p := range []testPod{a, b} {
		if err := dp.AddPod(ctx, p.iface); err != nil {
			t.Fatal(err)
		}
	}
	b.serve(t)

	st := cp.NewNodeState()
	st.AppliedToGroups["atg-b"] = &cp.AppliedToGroup{Name: "atg-b", Members: []cp.GroupMember{member(b)}}
	st.AddressGroups["ag-a"] = &cp.AddressGroup{Name: "ag-a", Members: []cp.GroupMember{member(a)}}
	lastName := fmt.Sprintf("p%05d", rules-1)
	for i := range rules {
		name, port := fmt.Sprintf("p%05d", i), "8080"
		if name == lastName {
			port = "80"
		}
		st.Policies[name] = &cp.NetworkPolicy{Name: name, SourceRef: cp.NetworkPolicyReference{Namespace: "x", Name: name},
			AppliedToGroups: []string{"atg-b"}, PolicyTypes: []string{"Ingress"},
			Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ag-a"}},
				Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: port}}}}}
	}
	start := time.Now()
	if err := dp.SetPolicy(ctx, st); err != nil {
		t.Fatalf("installing %d rules that share their clauses: %v", rules, err)
	}
	t.Logf("installed %d rules in %v", rules, time.Since(start))

	var lastID uint32
	for _, r := range dp.Policies() {
		if r.Name == lastName {
			for id := range r.Rules {
				lastID = id
			}
		}
	}
	if lastID == 0 {
		t.Fatalf("no conjunction id for policy %s", lastName)
	}
	// The shared clause flows were split: none carries more than 4,000
	// conjunction actions, and the last rule is below the first band.
	prios, most := map[uint16]bool{}, 0
	lastPrio := -1
	for _, f := range dp.Flows() {
		n := 0
		for _, act := range f.Actions {
			if _, ok := act.(openflow.Conjunction); ok {
				n++
			}
		}
		most = max(most, n)
		if f.Table == aof.IngressRuleTable && f.Match.ConjID != 0 {
			prios[f.Priority] = true
			if f.Match.ConjID == lastID {
				lastPrio = int(f.Priority)
			}
		}
	}
	if most > 4000 || len(prios) < 2 || lastPrio < 0 || lastPrio == 200 {
		t.Fatalf("at most %d conjunction actions in a flow, conj_id flows at priorities %v, the last rule's (%d) at %d: want <= 4000, several bands, the last rule below 200",
			most, prios, lastID, lastPrio)
	}
	t.Logf("at most %d conjunction actions in a flow; bands at priorities %v; rule %d at priority %d", most, prios, lastID, lastPrio)

	flow := func(port int) string {
		return fmt.Sprintf("in_port=%d,tcp,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,tp_dst=%d,tcp_flags=syn",
			a.iface.OFPort, a.iface.MAC, b.iface.MAC, a.iface.IP, b.iface.IP, port)
	}
	// A step of the trace: "<table>. <match>, priority <n>, cookie <c>".
	conjHit := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\. conj_id=(\d+),ip, priority (\d+)`, aof.IngressRuleTable.ID))
	for _, tc := range []struct {
		port    int
		allowed bool
	}{{80, true}, {81, false}} {
		out, err := ovsctl.Trace(ctx, inst.VswitchdCtl, inst.Bridge, flow(tc.port))
		if err != nil {
			t.Fatalf("ofproto/trace: %v", err)
		}
		// The last pass commits the connection with the rule ids in its
		// label and outputs to b's port, or drops the packet.
		acts := out[strings.LastIndex(out, "Datapath actions: "):]
		label := fmt.Sprintf("label=0x%x00000000/", lastID)
		allowed := strings.Contains(acts, label) && strings.Contains(out, fmt.Sprintf("output port is %d\n", b.iface.OFPort))
		dropped := strings.HasPrefix(acts, "Datapath actions: drop")
		if allowed != tc.allowed || dropped == tc.allowed {
			t.Errorf("a -> b:%d: allowed (with %s) %v, dropped %v; want allowed %v:\n%s", tc.port, label, allowed, dropped, tc.allowed, out)
			continue
		}
		m := conjHit.FindStringSubmatch(out)
		switch {
		case tc.allowed && (m == nil || m[1] != fmt.Sprint(lastID) || m[2] != fmt.Sprint(lastPrio)):
			t.Errorf("a -> b:%d was allowed by %v, want the conj_id=%d flow at priority %d:\n%s", tc.port, m, lastID, lastPrio, out)
		case !tc.allowed && m != nil:
			t.Errorf("a -> b:%d hit %s but was dropped:\n%s", tc.port, m[0], out)
		}
		t.Logf("a -> b:%d: %s (rule step %v)", tc.port, strings.TrimSpace(acts), m)
	}

	// A real connection: conntrack records the last rule's id in bits
	// 32..63 of the connection's label.
	expectReach(t, inst, a, b, true)
	conn, err := a.dial(b)
	if err != nil {
		t.Fatalf("a -> b:80: %v", err)
	}
	defer conn.Close()
	ct, err := inst.Appctl("dpctl/dump-conntrack", "zone=65520")
	if err != nil {
		t.Fatalf("dpctl/dump-conntrack: %v", err)
	}
	want := fmt.Sprintf("labels=0x%x00000000", lastID)
	found := false
	for _, l := range strings.Split(ct, "\n") {
		if strings.Contains(l, "src="+a.iface.IP.String()) && strings.Contains(l, "dport=80") && strings.Contains(l, want) {
			found = true
		}
	}
	if !found {
		t.Errorf("no conntrack entry of a -> b:80 with %s (ingress rule %d):\n%s", want, lastID, ct)
	}
}

package openflow

import (
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// pod makes a local pod x/<name> on port ofport with IP 198.19.0.<ofport>.
func pod(ns, name string, ofport int32) interfacestore.PodInterface {
	return interfacestore.PodInterface{
		PodNamespace: ns, PodName: name, OFPort: ofport,
		MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, byte(ofport)},
		IP:  netip.AddrFrom4([4]byte{198, 19, 0, byte(ofport)}),
	}
}

func member(p interfacestore.PodInterface, ports ...cp.NamedPort) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: p.PodNamespace, Name: p.PodName}, IPs: []string{p.IP.String()}, Ports: ports}
}

// counter hands out conjunction ids in order of first use.
func counter() ConjIDs {
	ids := map[string]uint32{}
	return func(k string) uint32 {
		if _, ok := ids[k]; !ok {
			ids[k] = uint32(len(ids) + 1)
		}
		return ids[k]
	}
}

var (
	podA = pod("x", "a", 2)
	podB = pod("x", "b", 3)
	podC = pod("x", "c", 4)
)

func pods(ps ...interfacestore.PodInterface) map[string]interfacestore.PodInterface {
	m := map[string]interfacestore.PodInterface{}
	for _, p := range ps {
		m[p.PodKey()] = p
	}
	return m
}

// skeletonPolicy: pod x/b accepts TCP 80 from x/a only.
func skeletonPolicy() *cp.NodeState {
	st := cp.NewNodeState()
	st.AppliedToGroups["atg-b"] = &cp.AppliedToGroup{Name: "atg-b", Members: []cp.GroupMember{member(podB)}}
	st.AddressGroups["ag-a"] = &cp.AddressGroup{Name: "ag-a", Members: []cp.GroupMember{member(podA)}}
	st.Policies["uid-1"] = &cp.NetworkPolicy{
		Name: "uid-1", AppliedToGroups: []string{"atg-b"}, PolicyTypes: []string{"Ingress"},
		Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ag-a"}},
			Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}}},
	}
	return st
}

// mustRender renders st, failing the test on an error.
func mustRender(t testing.TB, st State, ids ConjIDs) []of.Flow {
	t.Helper()
	flows, err := Render(st, ids)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return flows
}

func renderText(flows []of.Flow) string {
	var b strings.Builder
	for _, f := range flows {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs from the rendered flows (-want +got):\n%s", path, diff)
	}
}

func TestRenderSkeletonGolden(t *testing.T) {
	flows := mustRender(t, State{Pods: pods(podA, podB, podC), Policy: skeletonPolicy()}, counter())
	golden(t, "skeleton.flows", renderText(flows))
}

func tcp(from, to interfacestore.PodInterface, port uint16) packet {
	return packet{InPort: uint32(from.OFPort), Proto: of.ProtoTCP, EthSrc: from.MAC, EthDst: to.MAC,
		Src: from.IP, Dst: to.IP, TpDst: port, CtResult: of.CtNew}
}

func TestTraceVerdicts(t *testing.T) {
	allPods := pods(podA, podB, podC)
	withRule := func(r cp.Rule, types ...string) *cp.NodeState {
		st := skeletonPolicy()
		st.Policies["uid-1"].Rules = []cp.Rule{r}
		if len(types) > 0 {
			st.Policies["uid-1"].PolicyTypes = types
		}
		return st
	}
	est := func(p packet) packet { p.CtResult = of.CtEst; return p }
	udp := func(p packet) packet { p.Proto = of.ProtoUDP; return p }
	spoofed := func(p packet) packet { p.Src = netip.MustParseAddr("198.19.0.200"); return p }
	arp := func(p packet) packet { p.Proto = of.ProtoARP; p.TpDst = 0; return p }

	named := cp.Rule{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "http"}}}
	namedState := withRule(named)
	namedState.AppliedToGroups["atg-b"].Members = []cp.GroupMember{member(podB, cp.NamedPort{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP})}

	tests := []struct {
		name   string
		policy *cp.NodeState
		pkt    packet
		want   string
	}{
		{"no policy: a to b", nil, tcp(podA, podB, 80), "output:3"},
		{"allowed peer and port", skeletonPolicy(), tcp(podA, podB, 80), "output:3"},
		{"other peer", skeletonPolicy(), tcp(podC, podB, 80), "drop"},
		{"other port", skeletonPolicy(), tcp(podA, podB, 81), "drop"},
		{"other protocol", skeletonPolicy(), udp(tcp(podA, podB, 80)), "drop"},
		{"unprotected pod", skeletonPolicy(), tcp(podA, podC, 80), "output:4"},
		{"reply of an established connection", skeletonPolicy(), est(tcp(podB, podA, 40000)), "output:2"},
		{"established into an isolated pod", skeletonPolicy(), est(tcp(podC, podB, 81)), "output:3"},
		{"spoofed source ip", nil, spoofed(tcp(podA, podB, 80)), "drop"},
		{"arp under deny-all", withRule(cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"none"}}}), arp(tcp(podA, podB, 0)), "output:3"},
		{"arp with a spoofed sender address", nil, arp(spoofed(tcp(podA, podB, 0))), "drop"},
		{"arp for an unknown address is not flooded", nil, arp(tcp(podA, pod("x", "gone", 9), 0)), "drop"},
		{"deny all ingress", withRule(cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"none"}}}), tcp(podA, podB, 80), "drop"},
		{"allow all ingress", withRule(cp.Rule{Direction: cp.DirectionIn}), tcp(podC, podB, 9), "output:3"},
		{"port range in", withRule(cp.Rule{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "1000", EndPort: 1100}}}), tcp(podC, podB, 1057), "output:3"},
		{"port range above", withRule(cp.Rule{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "1000", EndPort: 1100}}}), tcp(podC, podB, 1101), "drop"},
		{"protocol only", withRule(cp.Rule{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolUDP}}}), udp(tcp(podC, podB, 53)), "output:3"},
		{"ipBlock", withRule(cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.19.0.0/29"}}}}), tcp(podC, podB, 80), "output:3"},
		{"ipBlock except", withRule(cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.19.0.0/29", Except: []string{"198.19.0.4/30"}}}}}), tcp(podC, podB, 80), "drop"},
		{"ipBlock except keeps the rest", withRule(cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.19.0.0/29", Except: []string{"198.19.0.4/30"}}}}}), tcp(podA, podB, 80), "output:3"},
		{"named port resolved", namedState, tcp(podA, podB, 8080), "output:3"},
		{"named port other number", namedState, tcp(podA, podB, 80), "drop"},
		{"egress deny", withRule(cp.Rule{Direction: cp.DirectionOut, To: cp.Peer{AddressGroups: []string{"ag-a"}}}, "Egress"), tcp(podB, podC, 80), "drop"},
		{"egress allow", withRule(cp.Rule{Direction: cp.DirectionOut, To: cp.Peer{AddressGroups: []string{"ag-a"}}}, "Egress"), tcp(podB, podA, 80), "output:2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flows := mustRender(t, State{Pods: allPods, Policy: tc.policy}, counter())
			v := newTracer(flows).trace(tc.pkt)
			if v.String() != tc.want {
				t.Errorf("verdict %s, want %s; path %v\nflows:\n%s", v, tc.want, v.Path, renderText(flows))
			}
			if v.Output != 0 && tc.pkt.Proto != of.ProtoARP && tc.pkt.CtResult == of.CtNew && !v.Committed {
				t.Errorf("a new connection was forwarded without a conntrack commit")
			}
		})
	}
}

func TestRuleFlowCountIsSumNotProduct(t *testing.T) {
	// 5 peers x 2 targets x 3 ports: a cross product would be 30 flows; a
	// conjunction is 5 + 2 + 3 clause flows and 1 action flow.
	st := cp.NewNodeState()
	var peers []cp.GroupMember
	for i := range 5 {
		peers = append(peers, cp.GroupMember{Pod: cp.PodReference{Namespace: "y", Name: fmt.Sprint(i)}, IPs: []string{fmt.Sprintf("198.19.2.%d", 2*i+1)}})
	}
	st.AddressGroups["ag"] = &cp.AddressGroup{Name: "ag", Members: peers}
	st.AppliedToGroups["atg"] = &cp.AppliedToGroup{Name: "atg", Members: []cp.GroupMember{member(podA), member(podB)}}
	st.Policies["p"] = &cp.NetworkPolicy{Name: "p", AppliedToGroups: []string{"atg"}, Rules: []cp.Rule{{
		Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ag"}},
		Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}, {Protocol: cp.ProtocolTCP, Port: "443"}, {Protocol: cp.ProtocolUDP, Port: "53"}},
	}}}
	flows := PolicyFlows(st, pods(podA, podB), counter())
	byTable := map[string]int{}
	for _, f := range flows {
		byTable[f.Table.Name]++
	}
	// The rule's two counters (new sessions, established packets) live in
	// the metric table, apart from its conjunction.
	if want := map[string]int{"IngressRule": 5 + 2 + 3 + 1, "IngressMetric": 2}; !maps.Equal(byTable, want) {
		t.Errorf("got flows per table %v, want %v:\n%s", byTable, want, renderText(flows))
	}
}

func TestPortRangeMasks(t *testing.T) {
	tests := []struct {
		start, end uint16
		want       [][2]uint16
	}{
		{80, 80, [][2]uint16{{80, 0xffff}}},
		{1000, 1007, [][2]uint16{{1000, 0xfff8}}},
		{1, 6, [][2]uint16{{1, 0xffff}, {2, 0xfffe}, {4, 0xfffe}, {6, 0xffff}}},
		{65534, 65535, [][2]uint16{{65534, 0xfffe}}},
	}
	for _, tc := range tests {
		if got := portRangeMasks(tc.start, tc.end); !cmp.Equal(got, tc.want) {
			t.Errorf("portRangeMasks(%d,%d) = %v, want %v", tc.start, tc.end, got, tc.want)
		}
	}
	// Every port of a range is covered exactly once.
	for _, r := range [][2]uint16{{1, 65535}, {1000, 2000}, {32768, 60999}} {
		count := map[uint16]int{}
		for _, m := range portRangeMasks(r[0], r[1]) {
			for p := uint32(0); p <= 0xffff; p++ {
				if uint16(p)&m[1] == m[0] {
					count[uint16(p)]++
				}
			}
		}
		for p := uint32(0); p <= 0xffff; p++ {
			in := uint16(p) >= r[0] && uint16(p) <= r[1]
			if (in && count[uint16(p)] != 1) || (!in && count[uint16(p)] != 0) {
				t.Fatalf("range %v: port %d covered %d times", r, p, count[uint16(p)])
			}
		}
	}
}

// TestTraceRecordsRulesInConnection checks that a new connection is
// committed with the ids of the rules that allowed it in its label, that
// it is counted once as a session of each rule, and that later packets of
// the connection are counted by the rules in the label.
func TestTraceRecordsRulesInConnection(t *testing.T) {
	st := skeletonPolicy() // ingress rule: x/b accepts TCP 80 from x/a (conjunction 1)
	st.Policies["uid-2"] = &cp.NetworkPolicy{Name: "uid-2", AppliedToGroups: []string{"atg-a"},
		PolicyTypes: []string{"Egress"},
		Rules:       []cp.Rule{{Direction: cp.DirectionOut, To: cp.Peer{AddressGroups: []string{"ag-b"}}}}}
	st.AppliedToGroups["atg-a"] = &cp.AppliedToGroup{Name: "atg-a", Members: []cp.GroupMember{member(podA)}}
	st.AddressGroups["ag-b"] = &cp.AddressGroup{Name: "ag-b", Members: []cp.GroupMember{member(podB)}}
	flows := mustRender(t, State{Pods: pods(podA, podB, podC), Policy: st}, counter())
	tr := newTracer(flows)
	const ingressID, egressID = 1, 2

	hits := func(v verdict, cookie uint64) int {
		n := 0
		for _, c := range v.Cookies {
			if c == cookie {
				n++
			}
		}
		return n
	}
	tests := []struct {
		name      string
		pkt       packet
		want      string
		wantLabel uint64
		counted   []uint64 // metric flows hit once each
	}{
		{"new connection allowed by both rules", tcp(podA, podB, 80), "output:3", egressID | ingressID<<32,
			[]uint64{MetricCookie(MetricSessions, egressID), MetricCookie(MetricSessions, ingressID)}},
		{"a later packet of it", func() packet {
			p := tcp(podA, podB, 80)
			p.CtResult = of.CtEst
			p.CtLabel = egressID | ingressID<<32
			return p
		}(),
			"output:3", 0, []uint64{MetricCookie(MetricEstablished, egressID), MetricCookie(MetricEstablished, ingressID)}},
		{"its reply", func() packet {
			p := tcp(podB, podA, 40000)
			p.CtResult = of.CtEst
			p.CtLabel = egressID | ingressID<<32
			return p
		}(),
			"output:2", 0, []uint64{MetricCookie(MetricEstablished, egressID), MetricCookie(MetricEstablished, ingressID)}},
		{"egress rule only (c is not isolated)", tcp(podA, podC, 80), "drop", 0, nil},
		{"unlabelled established packet", func() packet { p := tcp(podC, podA, 80); p.CtResult = of.CtEst; return p }(), "output:2", 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tr.trace(tc.pkt)
			if v.String() != tc.want {
				t.Fatalf("verdict %s, want %s; path %v", v, tc.want, v.Path)
			}
			if v.Committed && v.Label != tc.wantLabel {
				t.Errorf("committed label 0x%x, want 0x%x", v.Label, tc.wantLabel)
			}
			for _, c := range tc.counted {
				if n := hits(v, c); n != 1 {
					t.Errorf("metric flow 0x%x hit %d times, want once; cookies %x", c, n, v.Cookies)
				}
			}
			metricHits := 0
			for _, c := range v.Cookies {
				if _, _, ok := ParseMetricCookie(c); ok {
					metricHits++
				}
			}
			if metricHits != len(tc.counted) {
				t.Errorf("%d metric flows hit, want %d; cookies %x", metricHits, len(tc.counted), v.Cookies)
			}
		})
	}
}

func TestParseMetricCookie(t *testing.T) {
	for _, tc := range []struct {
		cookie uint64
		kind   MetricKind
		id     uint32
		ok     bool
	}{
		{MetricCookie(MetricSessions, 7), MetricSessions, 7, true},
		{MetricCookie(MetricEstablished, 0xffffffff), MetricEstablished, 0xffffffff, true},
		{CookiePolicy | 7, 0, 0, false},
		{CookieMetric | 3<<32 | 7, 0, 0, false},
		{CookieMetric | 1<<40 | 1<<32 | 7, 0, 0, false},
	} {
		kind, id, ok := ParseMetricCookie(tc.cookie)
		if kind != tc.kind || id != tc.id || ok != tc.ok {
			t.Errorf("ParseMetricCookie(0x%x) = %v, %d, %v; want %v, %d, %v", tc.cookie, kind, id, ok, tc.kind, tc.id, tc.ok)
		}
	}
}

func TestRulesMapsIDsBack(t *testing.T) {
	st := skeletonPolicy()
	st.Policies["uid-1"].SourceRef = cp.NetworkPolicyReference{Namespace: "x", Name: "allow-a"}
	st.Policies["uid-1"].Rules = append(st.Policies["uid-1"].Rules, cp.Rule{Direction: cp.DirectionOut})
	keys := map[string]uint32{}
	next := uint32(10)
	ids := func(key string) uint32 {
		if _, ok := keys[key]; !ok {
			keys[key] = next
			next++
		}
		return keys[key]
	}
	state := State{Pods: pods(podA, podB, podC), Policy: st}
	mustRender(t, state, ids)
	got := RulesOf(Realizations(state, func(key string) (uint32, bool) { id, ok := keys[key]; return id, ok }))
	want := map[uint32]RuleRef{
		10: {Namespace: "x", Name: "allow-a", Direction: "Ingress", Index: 0},
		11: {Namespace: "x", Name: "allow-a", Direction: "Egress", Index: 1},
	}
	if !maps.Equal(got, want) {
		t.Fatalf("RulesOf(Realizations()) = %v, want %v", got, want)
	}
}

func TestRound(t *testing.T) {
	for prev, want := range map[string]uint8{"": 1, "1": 2, "254": 255, "255": 1, "junk": 1, "-3": 1} {
		if got := NextRound(prev); got != want {
			t.Errorf("NextRound(%q) = %d, want %d", prev, got, want)
		}
	}
	flows := []of.Flow{{Cookie: MetricCookie(MetricSessions, 9)}, {Cookie: 0x0500000000000000 | CookiePod | 3}}
	SetRound(flows, 7)
	if flows[0].Cookie != 0x0700000000000000|MetricCookie(MetricSessions, 9) || flows[1].Cookie != 0x0700000000000000|CookiePod|3 {
		t.Fatalf("SetRound(7) gave cookies %x", []uint64{flows[0].Cookie, flows[1].Cookie})
	}
	if kind, id, ok := ParseMetricCookie(flows[0].Cookie); !ok || kind != MetricSessions || id != 9 {
		t.Fatalf("ParseMetricCookie of a cookie with a round = %v, %d, %v", kind, id, ok)
	}
}

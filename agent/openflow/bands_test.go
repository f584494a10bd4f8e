package openflow

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// sharedClauseState has n ingress policies p00000..., each allowing TCP 80
// from pod x/a (say, a monitoring pod) to pod x/b: every rule shares its
// three clause matches with every other. The last policy allows lastPort
// instead. Policy i has the conjunction id i+1 with counter() and byName.
func sharedClauseState(n int, lastPort string) *cp.NodeState {
	st := cp.NewNodeState()
	st.AppliedToGroups["atg-b"] = &cp.AppliedToGroup{Name: "atg-b", Members: []cp.GroupMember{member(podB)}}
	st.AddressGroups["ag-mon"] = &cp.AddressGroup{Name: "ag-mon", Members: []cp.GroupMember{member(podA)}}
	for i := range n {
		port := "80"
		if i == n-1 {
			port = lastPort
		}
		name := fmt.Sprintf("p%05d", i)
		st.Policies[name] = &cp.NetworkPolicy{
			Name: name, AppliedToGroups: []string{"atg-b"}, PolicyTypes: []string{"Ingress"},
			Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ag-mon"}},
				Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: port}}}},
		}
	}
	return st
}

// byName gives the rule of policy pNNNNN the conjunction id NNNNN+1, as
// counter() does for sharedClauseState, whatever other policies exist.
func byName(key string) uint32 {
	var i uint32
	if _, err := fmt.Sscanf(key, "p%05d/", &i); err != nil {
		panic(fmt.Sprintf("key %q: %v", key, err))
	}
	return i + 1
}

// conjunctionParts is what the flows of one table say about conjunction
// id: the priorities of its clause flows by clause, its clause count and
// the priorities of its conj_id flows.
type conjunctionParts struct {
	clauses  map[uint8][]uint16
	n        uint8
	conjFlow []uint16
}

func conjunctionsOf(flows []of.Flow, table of.Table) map[uint32]*conjunctionParts {
	parts := map[uint32]*conjunctionParts{}
	get := func(id uint32) *conjunctionParts {
		if parts[id] == nil {
			parts[id] = &conjunctionParts{clauses: map[uint8][]uint16{}}
		}
		return parts[id]
	}
	for _, f := range flows {
		if f.Table != table {
			continue
		}
		if f.Match.ConjID != 0 {
			p := get(f.Match.ConjID)
			p.conjFlow = append(p.conjFlow, f.Priority)
			continue
		}
		for _, a := range f.Actions {
			if c, ok := a.(of.Conjunction); ok {
				p := get(c.ID)
				p.clauses[c.Clause] = append(p.clauses[c.Clause], f.Priority)
				p.n = c.NClauses
			}
		}
	}
	return parts
}

// TestBandsBoundConjunctionsPerFlow checks that however many rules share a
// peer, a target and a port, no flow carries more than
// maxConjunctionsPerFlow conjunction actions, that every rule still has its
// complete conjunction at one priority, and that tables of up to
// conjunctionsPerBand conjunctions keep priorityRule.
func TestBandsBoundConjunctionsPerFlow(t *testing.T) {
	for _, tc := range []struct {
		rules, bands int
	}{{10, 1}, {2000, 1}, {2001, 2}, {4100, 3}, {10000, 5}} {
		t.Run(fmt.Sprint(tc.rules), func(t *testing.T) {
			flows := mustRender(t, State{Pods: pods(podA, podB), Policy: sharedClauseState(tc.rules, "80")}, counter())
			most := 0
			for _, f := range flows {
				n := 0
				for _, a := range f.Actions {
					if _, ok := a.(of.Conjunction); ok {
						n++
					}
				}
				if n > maxConjunctionsPerFlow {
					t.Errorf("flow %s carries %d conjunction actions, more than %d", f.Key(), n, maxConjunctionsPerFlow)
				}
				if n > 0 && f.Cookie != CookiePolicy|uint64(f.Actions[0].(of.Conjunction).ID) {
					t.Errorf("flow %s has cookie %#x, want that of its lowest conjunction %d", f.Key(), f.Cookie, f.Actions[0].(of.Conjunction).ID)
				}
				most = max(most, n)
			}
			parts := conjunctionsOf(flows, IngressRuleTable)
			if len(parts) != tc.rules {
				t.Fatalf("%d conjunctions in IngressRule, want %d", len(parts), tc.rules)
			}
			bands := map[uint16]int{}
			for id, p := range parts {
				if p.n != 3 || len(p.clauses) != 3 || len(p.conjFlow) != 1 {
					t.Fatalf("conjunction %d: %d of %d clauses, %d conj_id flows; want 3 clauses and one conj_id flow", id, len(p.clauses), p.n, len(p.conjFlow))
				}
				prio := p.conjFlow[0]
				for k, ps := range p.clauses {
					if len(ps) != 1 || ps[0] != prio {
						t.Fatalf("conjunction %d: clause %d at priorities %v, its conj_id flow at %d", id, k, ps, prio)
					}
				}
				if want := priorityRule - uint16(id%uint32(tc.bands)); prio != want {
					t.Fatalf("conjunction %d at priority %d, want %d (band %d of %d)", id, prio, want, id%uint32(tc.bands), tc.bands)
				}
				bands[prio]++
			}
			if len(bands) != tc.bands {
				t.Errorf("conjunctions at %d priorities %v, want %d bands", len(bands), bands, tc.bands)
			}
			t.Logf("%d rules: %d flows, %d bands %v, at most %d conjunction actions in a flow", tc.rules, len(flows), len(bands), bands, most)
		})
	}
}

// TestBandsTrace walks packets through a table whose conjunctions take
// three bands: the last rule, in the lowest band, allows a port no other
// rule allows; the packet matches the other rules' peer and target clauses
// in the higher bands and must fall through to it.
func TestBandsTrace(t *testing.T) {
	const rules = 4100
	flows := mustRender(t, State{Pods: pods(podA, podB), Policy: sharedClauseState(rules, "8080")}, counter())
	// 4100 rules take 3 bands; id 4100 is in band 4100 mod 3 = 2.
	last := conjunctionsOf(flows, IngressRuleTable)[rules]
	if last == nil || len(last.conjFlow) != 1 || last.conjFlow[0] != priorityRule-2 {
		t.Fatalf("the last rule's conjunction: %+v, want its conj_id flow at priority %d", last, priorityRule-2)
	}
	tr := newTracer(flows)
	for _, tc := range []struct {
		name    string
		pkt     packet
		allowed bool
		rule    uint32 // 0: any rule but the last
	}{
		{"only the last rule allows 8080", tcp(podA, podB, 8080), true, rules},
		{"every other rule allows 80", tcp(podA, podB, 80), true, 0},
		{"no rule allows 81", tcp(podA, podB, 81), false, 0},
		{"no rule allows another source", tcp(podC, podB, 8080), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tr.trace(tc.pkt)
			if got := v.Output == uint32(podB.OFPort); got != tc.allowed {
				t.Fatalf("verdict %s (path %s), want allowed=%v", v, strings.Join(v.Path, ","), tc.allowed)
			}
			rule := v.Regs[regIngressRule]
			switch {
			case !tc.allowed:
			case tc.rule != 0 && rule != tc.rule:
				t.Errorf("allowed by rule %d, want %d", rule, tc.rule)
			case tc.rule == 0 && (rule == 0 || rule == rules):
				t.Errorf("allowed by rule %d, want one of the rules that allow port %d", rule, tc.pkt.TpDst)
			}
			if tc.allowed && !v.Committed {
				t.Errorf("a new connection was forwarded without a conntrack commit")
			}
		})
	}
}

// TestBandsStable checks that a rule's flows do not change when another
// rule goes away while the table keeps its number of bands.
func TestBandsStable(t *testing.T) {
	const rules = 4100
	st := sharedClauseState(rules, "8080")
	conjIDFlows := func() map[uint32]string {
		m := map[uint32]string{}
		for _, f := range mustRender(t, State{Pods: pods(podA, podB), Policy: st}, byName) {
			if f.Match.ConjID != 0 {
				m[f.Match.ConjID] = f.Key()
			}
		}
		return m
	}
	before := conjIDFlows()
	delete(st.Policies, "p00007") // conjunction 8
	after := conjIDFlows()
	if len(after) != rules-1 || after[8] != "" {
		t.Fatalf("%d conj_id flows after removing conjunction 8 (its own: %q), want %d", len(after), after[8], rules-1)
	}
	for id, k := range after {
		if before[id] != k {
			t.Errorf("conjunction %d: conj_id flow %s, was %s", id, k, before[id])
		}
	}
}

// TestBandsOnlyWhenShared checks that many rules keep one band when no
// clause flow is shared by more than conjunctionsPerBand of them.
func TestBandsOnlyWhenShared(t *testing.T) {
	const rules = 4100
	st := cp.NewNodeState()
	for _, p := range []interfacestore.PodInterface{podA, podB, podC} {
		st.AppliedToGroups["atg-"+p.PodName] = &cp.AppliedToGroup{Name: "atg-" + p.PodName, Members: []cp.GroupMember{member(p)}}
	}
	for i := range rules {
		name, target := fmt.Sprintf("p%05d", i), []string{"atg-a", "atg-b", "atg-c"}[i%3]
		st.AddressGroups[name] = &cp.AddressGroup{Name: name, Members: []cp.GroupMember{{
			Pod: cp.PodReference{Namespace: "peers", Name: name}, IPs: []string{fmt.Sprintf("198.18.%d.%d", i/200, 1+i%200)}}}}
		st.Policies[name] = &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{target}, PolicyTypes: []string{"Ingress"},
			Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{name}},
				Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: fmt.Sprint(8000 + i%100)}}}}}
	}
	flows := mustRender(t, State{Pods: pods(podA, podB, podC), Policy: st}, counter())
	parts := conjunctionsOf(flows, IngressRuleTable)
	if len(parts) != rules {
		t.Fatalf("%d conjunctions, want %d", len(parts), rules)
	}
	for id, p := range parts {
		if len(p.conjFlow) != 1 || p.conjFlow[0] != priorityRule {
			t.Fatalf("conjunction %d: conj_id flows at %v, want one at %d", id, p.conjFlow, priorityRule)
		}
	}
}

func TestBandCount(t *testing.T) {
	// flow is a clause flow's conjunction() actions for n ids from `from`,
	// `step` apart.
	flow := func(from, n, step int) []of.Action {
		as := make([]of.Action, n)
		for i := range as {
			as[i] = of.Conjunction{ID: uint32(from + i*step), Clause: 1, NClauses: 2}
		}
		return as
	}
	for _, tc := range []struct {
		name   string
		shared [][]of.Action
		want   uint32
		error  bool
	}{
		{"none", nil, 1, false},
		{"one band full", [][]of.Action{flow(1, conjunctionsPerBand, 1)}, 1, false},
		{"one more", [][]of.Action{flow(1, conjunctionsPerBand+1, 1)}, 2, false},
		{"the most shared flow decides", [][]of.Action{flow(1, 2500, 1), flow(1, 9000, 1)}, 5, false},
		{"late ids", [][]of.Action{flow(1_000_000, 5*conjunctionsPerBand, 1)}, 5, false},
		// Every id a multiple of 3: 3 bands would put all of them in one.
		{"skewed", [][]of.Action{flow(3, 4100, 3)}, 4, false},
		{"more than a band each in all bands", [][]of.Action{flow(1, int(maxBands)*conjunctionsPerBand+1, 1)}, maxBands, false},
		{"the most", [][]of.Action{flow(1, int(maxBands)*maxConjunctionsPerFlow, 1)}, maxBands, false},
		{"too many", [][]of.Action{flow(1, int(maxBands)*maxConjunctionsPerFlow+1, 1)}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bandCount(tc.shared)
			if (err != nil) != tc.error || got != tc.want {
				t.Fatalf("bandCount = %d, %v; want %d, error %v", got, err, tc.want, tc.error)
			}
			if err != nil && !strings.Contains(err.Error(), "priority bands") {
				t.Fatalf("error %q does not say what ran out", err)
			}
		})
	}
}

// TestRenderFailsWhenBandsRunOut checks that a clause flow too large for
// every band count is an error, not a flow OVS would refuse.
func TestRenderFailsWhenBandsRunOut(t *testing.T) {
	flows := []of.Flow{{Table: IngressRuleTable, Priority: priorityRule, Cookie: CookiePolicy | 1,
		Match: of.Match{Protocol: of.ProtoIP, IPSrc: netip.MustParsePrefix("198.18.0.1/32")}}}
	for id := range uint32(maxBands)*maxConjunctionsPerFlow + 1 {
		flows[0].Actions = append(flows[0].Actions, of.Conjunction{ID: id + 1, Clause: 1, NClauses: 2})
	}
	if _, err := splitBands(flows); err == nil || !strings.Contains(err.Error(), "IngressRule") {
		t.Fatalf("splitBands of a flow shared by %d rules: error %v, want one naming the table", len(flows[0].Actions), err)
	}
}

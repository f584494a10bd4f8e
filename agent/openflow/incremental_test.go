package openflow

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// allocator hands out conjunction ids as agent/datapath does: in order of
// first use, keeping across syncs only the keys the last sync used.
type allocator struct {
	ids, used map[string]uint32
	next      uint32
}

func newAllocator() *allocator {
	return &allocator{ids: map[string]uint32{}, used: map[string]uint32{}, next: 1}
}

func (a *allocator) clone() *allocator {
	return &allocator{ids: maps.Clone(a.ids), used: map[string]uint32{}, next: a.next}
}

func (a *allocator) alloc(key string) uint32 {
	id, ok := a.ids[key]
	if !ok {
		id = a.next
		a.next++
		a.ids[key] = id
	}
	a.used[key] = id
	return id
}

// commit keeps only the ids the last sync used, as the datapath does.
func (a *allocator) commit() { a.ids = a.used; a.used = map[string]uint32{} }

// table applies Incremental's deltas to a flow table by key.
type table map[string]of.Flow

func (t table) apply(d Delta) table {
	if d.Full != nil {
		t = table{}
		for _, f := range d.Full {
			t[f.Key()] = f
		}
		return t
	}
	for _, f := range d.Removed {
		delete(t, f.Key())
	}
	for _, f := range d.Changed {
		t[f.Key()] = f
	}
	return t
}

func (t table) text() string {
	flows := slices.Collect(maps.Values(t))
	SortFlows(flows)
	return renderText(flows)
}

// randomState changes a node's pods and policy state at random, always
// into new objects: like the datapath's callers, it never modifies what it
// handed out.
type randomState struct {
	rng   *rand.Rand
	pods  map[string]interfacestore.PodInterface
	state *cp.NodeState
}

const (
	randomPods     = 6
	randomRemote   = 4 // pods of other nodes, members of address groups
	randomGroups   = 4
	randomPolicies = 7
)

func (r *randomState) podRef(i int) cp.PodReference {
	if i < randomPods {
		return cp.PodReference{Namespace: "x", Name: fmt.Sprintf("p%d", i)}
	}
	return cp.PodReference{Namespace: "y", Name: fmt.Sprintf("r%d", i)}
}

func (r *randomState) members() []cp.GroupMember {
	var ms []cp.GroupMember
	for i := range randomPods + randomRemote {
		if r.rng.IntN(3) != 0 {
			continue
		}
		m := cp.GroupMember{Pod: r.podRef(i), IPs: []string{fmt.Sprintf("198.19.%d.%d", i/randomPods, 10+i%randomPods+r.rng.IntN(2)*100)}}
		switch r.rng.IntN(4) {
		case 0:
			m.Ports = []cp.NamedPort{{Name: "http", Port: int32(80 + r.rng.IntN(2)*8000), Protocol: cp.ProtocolTCP}}
		case 1:
			m.Ports = []cp.NamedPort{{Name: "http", Port: 80, Protocol: cp.ProtocolTCP}, {Name: "dns", Port: 53, Protocol: cp.ProtocolUDP}}
		}
		ms = append(ms, m)
	}
	return ms
}

func (r *randomState) groupNames(prefix string, max int) []string {
	var names []string
	for range r.rng.IntN(max + 1) {
		// Names past randomGroups are groups the state does not hold.
		names = append(names, fmt.Sprintf("%s%d", prefix, r.rng.IntN(randomGroups+1)))
	}
	return names
}

var randomServices = [][]cp.Service{
	nil,
	{{Protocol: cp.ProtocolTCP, Port: "80"}},
	{{Protocol: cp.ProtocolUDP, Port: "53"}, {Protocol: cp.ProtocolTCP, Port: "1000", EndPort: 1010}},
	{{Protocol: cp.ProtocolTCP, Port: "http"}},
	{{Protocol: cp.ProtocolTCP, Port: "http"}, {Protocol: cp.ProtocolUDP, Port: "dns"}},
	{{Protocol: cp.ProtocolSCTP}},
}

func (r *randomState) policy(name string) *cp.NetworkPolicy {
	pol := &cp.NetworkPolicy{Name: name, AppliedToGroups: r.groupNames("atg", 2)}
	for _, t := range []string{"Ingress", "Egress"} {
		if r.rng.IntN(2) == 0 {
			pol.PolicyTypes = append(pol.PolicyTypes, t)
		}
	}
	for range r.rng.IntN(4) {
		peer := cp.Peer{AddressGroups: r.groupNames("ag", 2)}
		if r.rng.IntN(4) == 0 {
			peer.IPBlocks = []cp.IPBlock{{CIDR: "198.19.0.0/24", Except: []string{fmt.Sprintf("198.19.0.%d/28", 16*r.rng.IntN(2))}}}
		}
		rule := cp.Rule{Direction: cp.DirectionIn, From: peer, Services: randomServices[r.rng.IntN(len(randomServices))]}
		if r.rng.IntN(2) == 0 {
			rule = cp.Rule{Direction: cp.DirectionOut, To: peer, Services: rule.Services}
		}
		pol.Rules = append(pol.Rules, rule)
	}
	return pol
}

// step makes one random change, in a new NodeState (and pods map) that
// shares the objects it does not change.
func (r *randomState) step() string {
	st := &cp.NodeState{Policies: maps.Clone(r.state.Policies), AppliedToGroups: maps.Clone(r.state.AppliedToGroups),
		AddressGroups: maps.Clone(r.state.AddressGroups)}
	defer func() { r.state = st }()
	switch r.rng.IntN(13) {
	case 0, 1:
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		st.Policies[name] = r.policy(name)
		return "set policy " + name
	case 2:
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		delete(st.Policies, name)
		return "delete policy " + name
	case 3:
		name := fmt.Sprintf("atg%d", r.rng.IntN(randomGroups))
		st.AppliedToGroups[name] = &cp.AppliedToGroup{Name: name, Members: r.members()}
		return "set applied-to group " + name
	case 4:
		name := fmt.Sprintf("ag%d", r.rng.IntN(randomGroups))
		st.AddressGroups[name] = &cp.AddressGroup{Name: name, Members: r.members()}
		return "set address group " + name
	case 5:
		name := fmt.Sprintf("ag%d", r.rng.IntN(randomGroups))
		delete(st.AddressGroups, name)
		delete(st.AppliedToGroups, strings.Replace(name, "ag", "atg", 1))
		return "delete groups " + name
	case 6:
		i := r.rng.IntN(randomPods)
		ref := r.podRef(i)
		r.pods = maps.Clone(r.pods)
		if _, ok := r.pods[ref.String()]; ok && r.rng.IntN(2) == 0 {
			delete(r.pods, ref.String())
			return "delete pod " + ref.String()
		}
		// Port 0 is a pod whose port is not known yet; ports move.
		p := interfacestore.PodInterface{PodNamespace: ref.Namespace, PodName: ref.Name, OFPort: int32(r.rng.IntN(randomPods + 2)),
			IP: netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + i)})}
		r.pods[ref.String()] = p
		return fmt.Sprintf("set pod %s port %d", ref, p.OFPort)
	case 9:
		// One rule changes an IP block's exceptions, or its direction
		// (keeping its peer and services).
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		pol := st.Policies[name]
		if pol == nil || len(pol.Rules) == 0 {
			return "no rule to flip in " + name
		}
		pol = pol.DeepCopy()
		rule := &pol.Rules[r.rng.IntN(len(pol.Rules))]
		if peer := &rule.From; len(peer.IPBlocks) > 0 && r.rng.IntN(2) == 0 {
			peer.IPBlocks[0].Except = []string{"198.19.0.64/26"}
			st.Policies[name] = pol
			return "change an exception of " + name
		}
		if peer := &rule.To; len(peer.IPBlocks) > 0 && r.rng.IntN(2) == 0 {
			peer.IPBlocks[0].Except = nil
			st.Policies[name] = pol
			return "drop an exception of " + name
		}
		rule.From, rule.To = rule.To, rule.From
		rule.Direction = map[cp.Direction]cp.Direction{cp.DirectionIn: cp.DirectionOut, cp.DirectionOut: cp.DirectionIn}[rule.Direction]
		st.Policies[name] = pol
		return "flip a rule of " + name
	case 10:
		// One member's address or ports change, the rest stays.
		name := fmt.Sprintf("ag%d", r.rng.IntN(randomGroups))
		if g := st.AddressGroups[name]; g != nil && len(g.Members) > 0 {
			g = g.DeepCopy()
			m := &g.Members[r.rng.IntN(len(g.Members))]
			if r.rng.IntN(2) == 0 {
				m.IPs = []string{fmt.Sprintf("198.19.3.%d", r.rng.IntN(4))}
			} else {
				m.Ports = []cp.NamedPort{{Name: "http", Port: int32(81 + r.rng.IntN(2)), Protocol: cp.ProtocolTCP}}
			}
			st.AddressGroups[name] = g
		}
		if g := st.AppliedToGroups[strings.Replace(name, "ag", "atg", 1)]; g != nil && len(g.Members) > 0 {
			g = g.DeepCopy()
			m := &g.Members[r.rng.IntN(len(g.Members))]
			m.Ports = []cp.NamedPort{{Name: "http", Port: int32(81 + r.rng.IntN(2)), Protocol: cp.ProtocolTCP}}
			st.AppliedToGroups[g.Name] = g
		}
		return "change a member of " + name
	case 11:
		// Only a service's port range changes.
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		pol := st.Policies[name]
		if pol == nil {
			return "no policy " + name
		}
		pol = pol.DeepCopy()
		for i := range pol.Rules {
			for j := range pol.Rules[i].Services {
				sv := &pol.Rules[i].Services[j]
				if port, err := strconv.Atoi(sv.Port); err == nil && port > 0 {
					if end := int32(port + 1 + r.rng.IntN(3)); sv.EndPort != end {
						sv.EndPort = end
					} else {
						sv.EndPort = 0
					}
					st.Policies[name] = pol
					return "change an endPort of " + name
				}
			}
		}
		return "no numbered port in " + name
	case 12:
		// Only the policy types change (which directions it isolates).
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		pol := st.Policies[name]
		if pol == nil {
			return "no policy " + name
		}
		pol = pol.DeepCopy()
		all := [][]string{{"Ingress"}, {"Egress"}, {"Ingress", "Egress"}}
		pol.PolicyTypes = all[r.rng.IntN(len(all))]
		st.Policies[name] = pol
		return "set the policy types of " + name
	case 7:
		st = r.state.DeepCopy()
		return "copy everything"
	default:
		// Same content, new objects.
		name := fmt.Sprintf("pol%d", r.rng.IntN(randomPolicies))
		if pol := st.Policies[name]; pol != nil {
			st.Policies[name] = pol.DeepCopy()
		}
		return "copy policy " + name
	}
}

// TestIncrementalEqualsRender applies random sequences of changes to pods,
// groups and policies and checks after every step that the table
// Incremental describes is Render's for the same state, and that it asked
// for the same conjunction ids in the same order (the allocators end
// equal). Now and then the incremental state is dropped (Reset), as the
// datapath does when OVS refuses a bundle.
func TestIncrementalEqualsRender(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := &randomState{rng: rand.New(rand.NewPCG(seed, 1)), pods: map[string]interfacestore.PodInterface{}, state: cp.NewNodeState()}
			ids := newAllocator()
			var inc Incremental
			got := table{}
			var history []string
			for step := range 150 {
				history = append(history, r.step())
				if r.rng.IntN(30) == 0 {
					inc.Reset()
					history = append(history, "reset")
				}
				st := State{Pods: r.pods, Policy: r.state}
				if step%10 == 3 {
					st.Network, st.RemoteNodes = network, remotes
				}
				incIDs, renderIDs := ids.clone(), ids.clone()
				d, err := inc.Update(st, incIDs.alloc)
				if err != nil {
					t.Fatalf("Update after %v: %v", history, err)
				}
				got = got.apply(d)
				want := mustRender(t, st, renderIDs.alloc)
				if diff := cmp.Diff(renderText(want), got.text()); diff != "" {
					t.Fatalf("after %v: Incremental differs from Render (-Render +Incremental):\n%s", history, diff)
				}
				if !maps.Equal(incIDs.used, renderIDs.used) || incIDs.next != renderIDs.next {
					t.Fatalf("after %v: conjunction ids differ: Incremental %v (next %d), Render %v (next %d)",
						history, incIDs.used, incIDs.next, renderIDs.used, renderIDs.next)
				}
				incIDs.commit()
				ids = incIDs
			}
		})
	}
}

// TestIncrementalBands takes a rule table into priority bands and out again:
// while a table is (or was, in the previous update) in bands, Update
// describes the whole table, equal to Render's.
func TestIncrementalBands(t *testing.T) {
	ids := newAllocator()
	var inc Incremental
	got := table{}
	wasBanded := false
	for i, rules := range []int{10, 11, conjunctionsPerBand + 5, conjunctionsPerBand + 6, 10, 11} {
		st := State{Pods: pods(podA), Policy: sharedTargetState(rules)}
		incIDs, renderIDs := ids.clone(), ids.clone()
		d, err := inc.Update(st, incIDs.alloc)
		if err != nil {
			t.Fatalf("%d rules: Update: %v", rules, err)
		}
		banded := rules > conjunctionsPerBand
		if wantFull := i == 0 || banded || wasBanded; (d.Full != nil) != wantFull {
			t.Errorf("%d rules: got a full table %v, want %v", rules, d.Full != nil, wantFull)
		}
		wasBanded = banded
		got = got.apply(d)
		if diff := cmp.Diff(renderText(mustRender(t, st, renderIDs.alloc)), got.text()); diff != "" {
			t.Fatalf("%d rules: Incremental differs from Render (-Render +Incremental):\n%s", rules, diff)
		}
		incIDs.commit()
		ids = incIDs
	}
}

// sharedTargetState has n policies of one rule each, all applying to x/a
// and allowing TCP 80 from their own peer address: x/a's clause flow
// carries n conjunctions.
func sharedTargetState(n int) *cp.NodeState {
	st := cp.NewNodeState()
	st.AppliedToGroups["atg"] = &cp.AppliedToGroup{Name: "atg", Members: []cp.GroupMember{member(podA)}}
	for i := range n {
		ag := fmt.Sprintf("ag%d", i)
		st.AddressGroups[ag] = &cp.AddressGroup{Name: ag, Members: []cp.GroupMember{{
			Pod: cp.PodReference{Namespace: "y", Name: ag}, IPs: []string{fmt.Sprintf("198.18.%d.%d", i/256, i%256)}}}}
		name := fmt.Sprintf("pol%05d", i)
		st.Policies[name] = &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{"atg"}, PolicyTypes: []string{"Ingress"},
			Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{ag}},
				Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}}}}
	}
	return st
}

// TestFoldMatchesMerge checks fold against merge on flows of one key that
// mix conjunction clauses with other actions and cookies, in every order
// (policies do not make such keys, but the rule is merge's).
func TestFoldMatchesMerge(t *testing.T) {
	m := of.Match{Protocol: of.ProtoIP, IPSrc: netip.MustParsePrefix("198.18.0.1/32")}
	conj := func(cookie uint64, id uint32) of.Flow {
		return of.Flow{Table: IngressRuleTable, Priority: priorityRule, Cookie: cookie, Match: m,
			Actions: []of.Action{of.Conjunction{ID: id, Clause: 1, NClauses: 2}}}
	}
	other := func(cookie uint64) of.Flow {
		return of.Flow{Table: IngressRuleTable, Priority: priorityRule, Cookie: cookie, Match: m, Actions: []of.Action{gotoTable(OutputTable)}}
	}
	flows := []of.Flow{conj(5, 5), other(3), conj(1, 1), conj(2, 2), other(4), {Table: IngressRuleTable, Priority: priorityRule, Cookie: 0, Match: m}}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 200 {
		n := 1 + rng.IntN(len(flows))
		in := make([]of.Flow, n)
		for i := range in {
			in[i] = flows[rng.IntN(len(flows))]
		}
		c := &contributor{isPolicy: true, name: "p", flows: in}
		var from []contribution
		for i := range in {
			from = append(from, contribution{c: c, i: i})
		}
		got, ok := fold(from)
		want := merge(slices.Clone(in))
		if !ok || len(want) != 1 || got.String() != want[0].String() {
			t.Fatalf("fold(%v) = %v, merge gives %v", renderText(in), got, renderText(want))
		}
	}
}

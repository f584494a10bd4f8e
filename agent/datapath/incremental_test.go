package datapath

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// randomPolicyState is a node state of up to 5 policies over 3
// applied-to groups and 3 address groups of pods x/p0..x/p5 (x/p0..x/p3
// can be local), with numeric, named and range ports.
func randomPolicyState(rng *rand.Rand, prev *cp.NodeState) *cp.NodeState {
	st := &cp.NodeState{Policies: maps.Clone(prev.Policies), AppliedToGroups: maps.Clone(prev.AppliedToGroups),
		AddressGroups: maps.Clone(prev.AddressGroups)}
	members := func() []cp.GroupMember {
		var ms []cp.GroupMember
		for i := range 6 {
			if rng.IntN(2) == 0 {
				ms = append(ms, cp.GroupMember{Pod: cp.PodReference{Namespace: "x", Name: fmt.Sprintf("p%d", i)},
					IPs:   []string{fmt.Sprintf("198.19.0.%d", 10+i+rng.IntN(2)*100)},
					Ports: []cp.NamedPort{{Name: "http", Port: int32(80 + rng.IntN(2)), Protocol: cp.ProtocolTCP}}})
			}
		}
		return ms
	}
	switch n := rng.IntN(3); rng.IntN(5) {
	case 0:
		st.AppliedToGroups[fmt.Sprintf("atg%d", n)] = &cp.AppliedToGroup{Name: fmt.Sprintf("atg%d", n), Members: members()}
	case 1:
		st.AddressGroups[fmt.Sprintf("ag%d", n)] = &cp.AddressGroup{Name: fmt.Sprintf("ag%d", n), Members: members()}
	case 2:
		delete(st.Policies, fmt.Sprintf("pol%d", rng.IntN(5)))
	default:
		name := fmt.Sprintf("pol%d", rng.IntN(5))
		pol := &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{fmt.Sprintf("atg%d", n)}, PolicyTypes: []string{"Ingress", "Egress"}[:1+rng.IntN(2)]}
		for range rng.IntN(3) {
			peer := cp.Peer{AddressGroups: []string{fmt.Sprintf("ag%d", rng.IntN(3))}}
			svcs := [][]cp.Service{nil, {{Protocol: cp.ProtocolTCP, Port: "80"}}, {{Protocol: cp.ProtocolTCP, Port: "http"}},
				{{Protocol: cp.ProtocolUDP, Port: "1000", EndPort: 1003}}}[rng.IntN(4)]
			if rng.IntN(2) == 0 {
				pol.Rules = append(pol.Rules, cp.Rule{Direction: cp.DirectionIn, From: peer, Services: svcs})
			} else {
				pol.Rules = append(pol.Rules, cp.Rule{Direction: cp.DirectionOut, To: peer, Services: svcs})
			}
		}
		st.Policies[name] = pol
	}
	return st
}

// TestIncrementalSyncsEqualFullRender drives a datapath through random
// changes of pods and policies, some bundles refused, and checks after
// every step that the bridge and the cache hold what Render gives for the
// datapath's state, and that each bundle was exactly the difference a
// full Render and diff would have sent.
func TestIncrementalSyncsEqualFullRender(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 2))
			r := &recorder{flows: map[string]of.Flow{}}
			dp := New(r)
			dp.SetRound(3)
			if err := dp.Start(ctx); err != nil {
				t.Fatal(err)
			}
			policy := cp.NewNodeState()
			var history []string
			afterRefusal := false
			for range 100 {
				before := maps.Clone(dp.installed)
				applied := len(r.applied)
				refuse := rng.IntN(10) == 0
				r.fail = refuse
				var err error
				switch rng.IntN(4) {
				case 0:
					p := testPod(fmt.Sprintf("p%d", rng.IntN(4)), int32(1+rng.IntN(6)))
					if rng.IntN(3) == 0 {
						history = append(history, "delete pod "+p.PodName)
						err = dp.DeletePod(ctx, p)
					} else {
						history = append(history, fmt.Sprintf("add pod %s port %d", p.PodName, p.OFPort))
						err = dp.AddPod(ctx, p)
					}
				default:
					next := randomPolicyState(rng, policy)
					history = append(history, "set policy")
					if err = dp.SetPolicy(ctx, next); err == nil || !refuse {
						policy = next
					}
				}
				refused := refuse && !r.fail
				r.fail = false
				if refused != (err != nil) {
					t.Fatalf("after %v: error %v, bundle refused %v", history, err, refused)
				}
				if refused {
					history = append(history, "(refused)")
				}
				sameFlows(t, r.flows, dp)

				want, err := openflow.Render(dp.state, func(key string) uint32 {
					id, ok := dp.conjIDs[key]
					if !ok {
						t.Fatalf("after %v: Render asks for conjunction %q, which the datapath did not allocate", history, key)
					}
					return id
				})
				if err != nil {
					t.Fatal(err)
				}
				openflow.SetRound(want, 3)
				if got := flowsText(dp.Flows()); got != flowsText(want) {
					t.Fatalf("after %v: installed flows differ from Render's:\n%s\nwant\n%s", history, got, flowsText(want))
				}
				if refused {
					afterRefusal = true
					continue
				}
				keys := make([]string, len(want))
				wantCh := diff(before, byKey(want, keys), want, keys)
				if afterRefusal && len(r.applied) > applied {
					// After a failed Apply the bridge may hold what the
					// cache does not: the next bundle replaces everything.
					wantCh = of.Changes{ReplaceAll: true, Add: want}
					afterRefusal = false
				}
				var gotCh of.Changes
				if len(r.applied) > applied {
					gotCh = r.applied[len(r.applied)-1]
				}
				if changesText(gotCh) != changesText(wantCh) {
					t.Fatalf("after %v: bundle\n%s\nwant the full diff\n%s", history, changesText(gotCh), changesText(wantCh))
				}
			}
		})
	}
}

func flowsText(flows []of.Flow) string {
	var b strings.Builder
	for _, f := range flows {
		b.WriteString(f.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func changesText(ch of.Changes) string {
	return fmt.Sprintf("replace all: %v\nadd:\n%smodify:\n%sdelete:\n%s", ch.ReplaceAll, flowsText(ch.Add), flowsText(ch.Modify), flowsText(ch.Delete))
}

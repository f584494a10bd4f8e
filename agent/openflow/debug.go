package openflow

import (
	"slices"
	"sort"

	"palisade.dev/palisade/agent/interfacestore"
)

// Realization is how one policy is realized on this node: the local pods
// it applies to, the directions it isolates them in, and the conjunction
// ids of its rules. Debugging tools attribute flows to it by cookie.
type Realization struct {
	// Namespace and Name are the source policy's.
	Namespace, Name string
	// PolicyTypes are the directions it isolates ("Ingress", "Egress").
	PolicyTypes []string
	// Targets are the local pods it applies to, by port.
	Targets []interfacestore.PodInterface
	// Rules maps the conjunction ids of its rules to them.
	Rules map[uint32]RuleRef
}

// Realizations lists the policies of st that apply to local pods, sorted
// by namespace and name, with the conjunction ids lookup gives their rules.
func Realizations(st State, lookup func(key string) (uint32, bool)) []Realization {
	if st.Policy == nil {
		return nil
	}
	var out []Realization
	for _, pol := range st.Policy.Policies {
		targets := appliedTo(st.Policy, pol, st.Pods)
		if len(targets) == 0 {
			continue
		}
		r := Realization{Namespace: pol.SourceRef.Namespace, Name: pol.SourceRef.Name,
			PolicyTypes: slices.Clone(pol.PolicyTypes), Targets: targets, Rules: map[uint32]RuleRef{}}
		for i, rule := range pol.Rules {
			for _, u := range ruleUnits(st.Policy, pol, i, rule, targets) {
				if id, ok := lookup(u.key); ok {
					r.Rules[id] = RuleRef{Namespace: r.Namespace, Name: r.Name, Direction: u.dir.policyType, Index: i}
				}
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

package openflow

import (
	"slices"
	"sort"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// State is everything the node's flows are computed from.
type State struct {
	// Pods maps "namespace/name" to the pods attached on this node.
	Pods map[string]interfacestore.PodInterface
	// Policy is the node's span of the controller's model.
	Policy *cp.NodeState
}

// Render computes the node's complete flow table: the pipeline, the pods and
// the policies. Flows with the same table, priority and match are merged into
// one (their conjunction actions listed together), and the result is sorted
// by table, priority (highest first) and match.
func Render(st State, ids ConjIDs) []of.Flow {
	flows := PipelineFlows()
	keys := make([]string, 0, len(st.Pods))
	for k := range st.Pods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		flows = append(flows, PodFlows(st.Pods[k])...)
	}
	flows = append(flows, PolicyFlows(st.Policy, st.Pods, ids)...)
	return merge(flows)
}

func isConjunctionOnly(f of.Flow) bool {
	if len(f.Actions) == 0 {
		return false
	}
	for _, a := range f.Actions {
		if _, ok := a.(of.Conjunction); !ok {
			return false
		}
	}
	return true
}

// merge folds flows with the same key. Conjunction clause flows are shared
// between rules by listing every conjunction() action; for any other pair the
// flow with the lower cookie is kept, so the result does not depend on order.
func merge(flows []of.Flow) []of.Flow {
	byKey := make(map[string]int, len(flows))
	out := make([]of.Flow, 0, len(flows))
	for _, f := range flows {
		k := f.Key()
		i, ok := byKey[k]
		if !ok {
			byKey[k] = len(out)
			out = append(out, f)
			continue
		}
		cur := out[i]
		switch {
		case isConjunctionOnly(cur) && isConjunctionOnly(f):
			cur.Actions = append(slices.Clip(cur.Actions), f.Actions...)
			cur.Cookie = min(cur.Cookie, f.Cookie)
			out[i] = cur
		case f.Cookie < cur.Cookie:
			out[i] = f
		}
	}
	for i := range out {
		if isConjunctionOnly(out[i]) {
			sortConjunctions(out[i].Actions)
		}
	}
	SortFlows(out)
	return out
}

func sortConjunctions(as []of.Action) {
	sort.Slice(as, func(i, j int) bool {
		a, b := as[i].(of.Conjunction), as[j].(of.Conjunction)
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Clause < b.Clause
	})
}

// SortFlows orders flows by table, priority (highest first) and match text,
// as a reader of a flow dump expects.
func SortFlows(flows []of.Flow) {
	sort.SliceStable(flows, func(i, j int) bool {
		a, b := flows[i], flows[j]
		if a.Table.ID != b.Table.ID {
			return a.Table.ID < b.Table.ID
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Match.String() < b.Match.String()
	})
}

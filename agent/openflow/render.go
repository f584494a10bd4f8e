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
	// Network is the node's gateway and tunnel; nil renders pods and
	// policies only (pods then reach only each other).
	Network *NodeNetwork
	// RemoteNodes are the other nodes, reached through the tunnel.
	RemoteNodes []RemoteNode
}

// Render computes the node's complete flow table: the pipeline, the pods,
// the gateway, tunnel and remote nodes, and the policies. Flows with the same table, priority and match are merged into
// one (their conjunction actions listed together), and the result is sorted
// by table, priority (highest first) and match.
func Render(st State, ids ConjIDs) []of.Flow {
	pipeline := PipelineFlows()
	flows := make([]of.Flow, 0, len(pipeline)+4*len(st.Pods)+estimatePolicyFlows(st.Policy, len(st.Pods)))
	flows = append(flows, pipeline...)
	keys := make([]string, 0, len(st.Pods))
	for k := range st.Pods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		flows = append(flows, PodFlows(st.Pods[k])...)
	}
	flows = append(flows, NetworkFlows(st.Network, st.Pods, st.RemoteNodes)...)
	flows = appendPolicyFlows(flows, st.Policy, st.Pods, ids)
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
	// owned marks merged flows whose Actions slice merge allocated itself,
	// so appending to it cannot touch another flow's actions.
	owned := map[int]bool{}
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
			if !owned[i] {
				cur.Actions = slices.Clone(cur.Actions)
				owned[i] = true
			}
			cur.Actions = append(cur.Actions, f.Actions...)
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
	type keyed struct {
		f     of.Flow
		match string
	}
	ks := make([]keyed, len(flows))
	for i, f := range flows {
		ks[i] = keyed{f, f.Match.String()}
	}
	sort.SliceStable(ks, func(i, j int) bool {
		a, b := ks[i], ks[j]
		if a.f.Table.ID != b.f.Table.ID {
			return a.f.Table.ID < b.f.Table.ID
		}
		if a.f.Priority != b.f.Priority {
			return a.f.Priority > b.f.Priority
		}
		return a.match < b.match
	})
	for i := range ks {
		flows[i] = ks[i].f
	}
}

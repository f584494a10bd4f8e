package openflow

import (
	"cmp"
	"slices"
	"sort"
	"strings"

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
// by table, priority (highest first) and match. No flow carries more than
// maxConjunctionsPerFlow conjunction actions: a rule table whose clause
// flows are shared by too many rules spreads its conjunctions over
// priority bands (bands.go). Render fails only when even the bands cannot
// make its flows small enough.
func Render(st State, ids ConjIDs) ([]of.Flow, error) {
	pipeline := PipelineFlows()
	flows := make([]of.Flow, 0, len(pipeline)+4*len(st.Pods)+estimatePolicyFlows(st.Policy, len(st.Pods)))
	flows = appendBaseFlows(append(flows, pipeline...), st)
	flows = appendPolicyFlows(flows, st.Policy, st.Pods, ids)
	return splitBands(merge(flows))
}

// appendBaseFlows appends the flows of the pods (in key order), the
// gateway, tunnel and remote nodes: what Render adds to the pipeline's
// before the policies.
func appendBaseFlows(flows []of.Flow, st State) []of.Flow {
	keys := make([]string, 0, len(st.Pods))
	for k := range st.Pods {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		flows = append(flows, PodFlows(st.Pods[k])...)
	}
	return append(flows, NetworkFlows(st.Network, st.Pods, st.RemoteNodes)...)
}

func isConjunctionOnly(f of.Flow) bool { return conjunctionsOnly(f.Actions) }

// conjunctionsOnly reports whether as are conjunction() actions, at least
// one.
func conjunctionsOnly(as []of.Action) bool {
	if len(as) == 0 {
		return false
	}
	for _, a := range as {
		if _, ok := a.(of.Conjunction); !ok {
			return false
		}
	}
	return true
}

// flowKey identifies a flow entry as OVS does: table, priority and match
// (its text, which is also the sort key after table and priority).
type flowKey struct {
	table    uint8
	priority uint16
	match    string
}

// merge folds flows with the same key. Conjunction clause flows are shared
// between rules by listing every conjunction() action; for any other pair the
// flow with the lower cookie is kept, so the result does not depend on order.
// It reuses flows' backing array.
func merge(flows []of.Flow) []of.Flow {
	byKey := make(map[flowKey]int, len(flows))
	// For each kept flow: its match text, whether its actions are all
	// conjunction() (kept rather than recomputed: a clause flow shared by
	// thousands of rules has thousands of actions), and whether merge
	// allocated its Actions itself, so appending cannot touch another flow's.
	matches := make([]string, 0, len(flows))
	conjOnly := make([]bool, 0, len(flows))
	owned := map[int]bool{}
	n := 0
	var buf []byte
	for i := range flows {
		f := &flows[i]
		buf = f.Match.AppendTo(buf[:0])
		k := flowKey{table: f.Table.ID, priority: f.Priority, match: string(buf)}
		j, ok := byKey[k]
		if !ok {
			byKey[k] = n
			if n != i {
				flows[n] = *f
			}
			matches = append(matches, k.match)
			conjOnly = append(conjOnly, isConjunctionOnly(*f))
			n++
			continue
		}
		cur := &flows[j]
		fConj := isConjunctionOnly(*f)
		switch {
		case conjOnly[j] && fConj:
			if !owned[j] {
				cur.Actions = slices.Clone(cur.Actions)
				owned[j] = true
			}
			cur.Actions = append(cur.Actions, f.Actions...)
			cur.Cookie = min(cur.Cookie, f.Cookie)
		case f.Cookie < cur.Cookie:
			*cur = *f
			conjOnly[j] = fConj
			delete(owned, j)
		}
	}
	clear(flows[n:]) // drop references held by the folded flows
	flows = flows[:n]
	for i := range flows {
		if conjOnly[i] {
			sortConjunctions(flows[i].Actions)
		}
	}
	sortByKey(flows, matches)
	return flows
}

func sortConjunctions(as []of.Action) {
	slices.SortFunc(as, func(x, y of.Action) int {
		a, b := x.(of.Conjunction), y.(of.Conjunction)
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.Clause, b.Clause)
	})
}

// SortFlows orders flows by table, priority (highest first) and match text,
// as a reader of a flow dump expects. Flows that compare equal keep their
// order.
func SortFlows(flows []of.Flow) {
	matches := make([]string, len(flows))
	var buf []byte
	for i := range flows {
		buf = flows[i].Match.AppendTo(buf[:0])
		matches[i] = string(buf)
	}
	sortByKey(flows, matches)
}

// sortByKey sorts flows as SortFlows does, matches[i] being the match text
// of flows[i]. It sorts indices, then moves each flow once (flows are large
// values).
func sortByKey(flows []of.Flow, matches []string) {
	order := make([]int32, len(flows))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &flows[i], &flows[j]
		if c := cmp.Compare(a.Table.ID, b.Table.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := strings.Compare(matches[i], matches[j]); c != 0 {
			return c
		}
		return cmp.Compare(i, j)
	})
	// Put flows[order[i]] at i, following each cycle of the permutation.
	for i := range order {
		if order[i] < 0 {
			continue
		}
		saved := flows[i]
		j := i
		for {
			src := int(order[j])
			order[j] = -1
			if src == i {
				flows[j] = saved
				break
			}
			flows[j] = flows[src]
			j = src
		}
	}
}

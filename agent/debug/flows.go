package debug

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"palisade.dev/palisade/agent/openflow"
	of "palisade.dev/palisade/ovs/openflow"
)

// Flow is one flow in OVS that realizes a policy.
type Flow struct {
	Table     uint8  `json:"table"`
	TableName string `json:"tableName"`
	Priority  uint16 `json:"priority"`
	// Cookie is the flow's cookie in OVS (round | category | id).
	Cookie uint64 `json:"cookie"`
	// Match is decoded from OVS's flow stats reply.
	Match string `json:"match"`
	// Actions are those the agent installed the flow with (OVS's reply is
	// not decoded for actions); empty if the agent has no flow with this
	// table, priority and match.
	Actions string `json:"actions"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Kind is what the flow does for the policy: "conjunction" (a clause),
	// "rule" (the action of a rule), "metric" (a rule's counter) or
	// "isolation" (the default drop of a pod the policy isolates).
	Kind string `json:"kind"`
	// Direction and Rule name the policy's rule ("Ingress", 0); Rule is
	// -1 for an isolation flow.
	Direction string `json:"direction"`
	Rule      int    `json:"rule"`
	// SharedWith lists the other rules ("ns/name/Ingress/0") or, for an
	// isolation flow, the other policies ("ns/name") the same flow serves.
	SharedWith []string `json:"sharedWith,omitempty"`
}

// PolicyFlows are the flows of one policy on this node.
type PolicyFlows struct {
	Policy string `json:"policy"`
	// Targets are the local pods the policy applies to.
	Targets []string `json:"targets"`
	Flows   []Flow   `json:"flows"`
}

// PolicySummary is one policy in the list of a node's policies.
type PolicySummary struct {
	Policy  string   `json:"policy"`
	Targets []string `json:"targets"`
	Rules   int      `json:"rules"`
	Flows   int      `json:"flows"`
	// Shared counts the flows that also serve other policies or rules.
	Shared int `json:"shared"`
}

// FlowFilter narrows a policy's flows; zero values select everything.
type FlowFilter struct {
	// Direction is "Ingress" or "Egress".
	Direction string
	// Rule selects one rule by its index among the policy's rules; it
	// needs Direction (the API answers 400 without it). nil selects all.
	Rule *int
}

func policyName(r openflow.Realization) string { return r.Namespace + "/" + r.Name }

func refPolicy(r openflow.RuleRef) string { return r.Namespace + "/" + r.Name }

func ruleName(r openflow.RuleRef) string {
	return fmt.Sprintf("%s/%s/%s/%d", r.Namespace, r.Name, r.Direction, r.Index)
}

// ctxCheckEvery is how many items the loops below handle between checks
// of their context.
const ctxCheckEvery = 4096

// Index is what attributing flows to policies needs: the installed flows
// by dump key, every realized rule by conjunction id and the policies
// isolating each pod. Build it once per request: attributing an entry is
// then independent of the number of policies.
type Index struct {
	installed map[string]of.Flow
	rules     map[uint32]openflow.RuleRef
	// isolating lists, by direction and port, the policies isolating a
	// pod, sorted.
	isolating map[isolationKey][]string
	names     map[uint8]string
}

type isolationKey struct {
	direction string
	ofport    uint32
}

// NewIndex indexes the realized policies all and the flows the agent
// installed; it stops early with ctx's error.
func NewIndex(ctx context.Context, all []openflow.Realization, installed []of.Flow) (*Index, error) {
	ix := &Index{installed: make(map[string]of.Flow, len(installed)), rules: map[uint32]openflow.RuleRef{},
		isolating: map[isolationKey][]string{}, names: openflow.TableNames()}
	for i, f := range installed {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		ix.installed[f.DumpKey()] = f
	}
	for _, pol := range all {
		for id, ref := range pol.Rules {
			ix.rules[id] = ref
		}
		for _, dir := range pol.PolicyTypes {
			seen := map[uint32]bool{}
			for _, t := range pol.Targets {
				k := isolationKey{dir, uint32(t.OFPort)}
				if !seen[k.ofport] {
					seen[k.ofport] = true
					ix.isolating[k] = append(ix.isolating[k], policyName(pol))
				}
			}
		}
	}
	for _, pols := range ix.isolating {
		slices.Sort(pols)
	}
	return ix, nil
}

// attribution is what one flow entry does and whom it serves.
type attribution struct {
	kind string
	// refs are the distinct rules a policy or metric flow serves, in the
	// order of its conjunction ids (its cookie's first).
	refs []openflow.RuleRef
	// direction and policies are an isolation flow's: the policies
	// isolating its pod in that direction.
	direction string
	policies  []string
	installed of.Flow
	known     bool
}

// attribute says what e does and whom it serves; ok is false for an entry
// of no realized policy.
func (ix *Index) attribute(e of.FlowEntry) (a attribution, ok bool) {
	a.installed, a.known = ix.installed[e.Key()]
	id := uint32(e.Cookie & openflow.CookieIDMask)
	var seen map[openflow.RuleRef]bool // once refs is long: a clause flow may serve thousands
	addRef := func(id uint32) {
		ref, ok := ix.rules[id]
		switch {
		case !ok:
		case seen != nil:
			if !seen[ref] {
				seen[ref] = true
				a.refs = append(a.refs, ref)
			}
		case !slices.Contains(a.refs, ref):
			a.refs = append(a.refs, ref)
			if len(a.refs) == 8 {
				seen = make(map[openflow.RuleRef]bool)
				for _, r := range a.refs {
					seen[r] = true
				}
			}
		}
	}
	switch e.Cookie & openflow.CookieCategoryMask {
	case openflow.CookiePolicy:
		// A clause flow shared by several rules carries the lowest of
		// their cookies and one conjunction() action per rule.
		a.kind = "rule"
		addRef(id)
		if a.known {
			for _, act := range a.installed.Actions {
				if c, ok := act.(of.Conjunction); ok {
					a.kind = "conjunction"
					addRef(c.ID)
				}
			}
		}
		return a, len(a.refs) > 0
	case openflow.CookieMetric:
		_, conj, ok := openflow.ParseMetricCookie(e.Cookie &^ openflow.CookieRoundMask)
		if !ok {
			return a, false
		}
		a.kind = "metric"
		addRef(conj)
		return a, len(a.refs) > 0
	case openflow.CookieIsolate:
		a.kind, a.direction = "isolation", isolationDirection(e.Table)
		a.policies = ix.isolating[isolationKey{a.direction, id}]
		return a, a.direction != "" && len(a.policies) > 0
	}
	return a, false
}

// flow is entry e as a flow of policy pol; ok is false if it is none of
// pol's.
func (ix *Index) flow(pol string, e of.FlowEntry, a attribution) (Flow, bool) {
	fl := Flow{Table: e.Table, TableName: ix.names[e.Table], Priority: e.Priority, Cookie: e.Cookie,
		Match: e.Match.String(), Packets: e.Packets, Bytes: e.Bytes, Kind: a.kind}
	if a.known {
		fl.Actions = a.installed.ActionsString()
	}
	if a.kind == "isolation" {
		if !slices.Contains(a.policies, pol) {
			return Flow{}, false
		}
		fl.Direction, fl.Rule = a.direction, -1
		for _, other := range a.policies {
			if other != pol {
				fl.SharedWith = append(fl.SharedWith, other)
			}
		}
		return fl, true
	}
	mine := slices.IndexFunc(a.refs, func(r openflow.RuleRef) bool { return refPolicy(r) == pol })
	if mine < 0 {
		return Flow{}, false
	}
	ref := a.refs[mine]
	fl.Direction, fl.Rule = ref.Direction, ref.Index
	for _, other := range a.refs {
		if other != ref {
			fl.SharedWith = append(fl.SharedWith, ruleName(other))
		}
	}
	slices.Sort(fl.SharedWith)
	return fl, true
}

// Attribute returns the flows of OVS (entries, as dumped by cookie
// category) that realize pol, using ix for their actions and the other
// owners of shared flows. It stops early with ctx's error.
func Attribute(ctx context.Context, ix *Index, pol openflow.Realization, entries []of.FlowEntry, filter FlowFilter) (PolicyFlows, error) {
	name := policyName(pol)
	out := PolicyFlows{Policy: name, Targets: podNames(pol), Flows: []Flow{}}
	for i, e := range entries {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return PolicyFlows{}, err
			}
		}
		a, ok := ix.attribute(e)
		if !ok {
			continue
		}
		fl, ok := ix.flow(name, e, a)
		if !ok {
			continue
		}
		if filter.Direction != "" && fl.Direction != filter.Direction {
			continue
		}
		if filter.Rule != nil && fl.Rule != *filter.Rule {
			continue
		}
		out.Flows = append(out.Flows, fl)
	}
	sort.SliceStable(out.Flows, func(i, j int) bool {
		a, b := out.Flows[i], out.Flows[j]
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Match < b.Match
	})
	return out, nil
}

func isolationDirection(table uint8) string {
	switch table {
	case openflow.IngressDefaultTable.ID:
		return "Ingress"
	case openflow.EgressDefaultTable.ID:
		return "Egress"
	}
	return ""
}

func podNames(pol openflow.Realization) []string {
	out := make([]string, len(pol.Targets))
	for i, t := range pol.Targets {
		out[i] = t.PodKey()
	}
	return out
}

// Summarize lists every policy of all with the number of its flows in OVS.
// It attributes each entry once, so it takes time linear in the entries
// (and their conjunctions) plus the policies; it stops early with ctx's
// error.
func Summarize(ctx context.Context, ix *Index, all []openflow.Realization, entries []of.FlowEntry) ([]PolicySummary, error) {
	out := make([]PolicySummary, len(all))
	byName := make(map[string]*PolicySummary, len(all))
	for i, pol := range all {
		out[i] = PolicySummary{Policy: policyName(pol), Targets: podNames(pol), Rules: countRules(pol)}
		byName[out[i].Policy] = &out[i]
	}
	count := func(pol string, shared bool) {
		if s := byName[pol]; s != nil {
			s.Flows++
			if shared {
				s.Shared++
			}
		}
	}
	for i, e := range entries {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		a, ok := ix.attribute(e)
		if !ok {
			continue
		}
		if a.kind == "isolation" {
			for _, p := range a.policies {
				count(p, len(a.policies) > 1)
			}
			continue
		}
		// A flow serving two rules is shared for each of their policies
		// (also two rules of one policy), counted once per policy.
		if len(a.refs) == 1 {
			count(refPolicy(a.refs[0]), false)
			continue
		}
		pols := make(map[string]bool, len(a.refs))
		for _, r := range a.refs {
			pols[refPolicy(r)] = true
		}
		for p := range pols {
			count(p, true)
		}
	}
	return out, nil
}

// countRules counts the policy's rules (a rule split by named ports has
// several conjunction ids).
func countRules(pol openflow.Realization) int {
	seen := map[openflow.RuleRef]bool{}
	for _, r := range pol.Rules {
		seen[r] = true
	}
	return len(seen)
}

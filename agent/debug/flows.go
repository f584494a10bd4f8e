package debug

import (
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
	// Rule selects one rule by index (with Direction); nil for all.
	Rule *int
}

func policyName(r openflow.Realization) string { return r.Namespace + "/" + r.Name }

func ruleName(r openflow.RuleRef) string {
	return fmt.Sprintf("%s/%s/%s/%d", r.Namespace, r.Name, r.Direction, r.Index)
}

// Attribute returns the flows of OVS (entries, as dumped by cookie
// category) that realize pol. installed are the flows the agent installed,
// which give the entries' actions and the conjunctions a shared clause
// flow serves; all are every policy realized on the node, to name the
// other owners of shared flows. It is a pure function.
func Attribute(pol openflow.Realization, all []openflow.Realization, installed []of.Flow, entries []of.FlowEntry, filter FlowFilter) PolicyFlows {
	byKey := make(map[string]of.Flow, len(installed))
	for _, f := range installed {
		byKey[f.DumpKey()] = f
	}
	rules := map[uint32]openflow.RuleRef{} // every policy's, for SharedWith
	for _, r := range all {
		for id, ref := range r.Rules {
			rules[id] = ref
		}
	}
	names := openflow.TableNames()
	out := PolicyFlows{Policy: policyName(pol), Targets: podNames(pol), Flows: []Flow{}}
	for _, e := range entries {
		f, known := byKey[e.Key()]
		fl := Flow{Table: e.Table, TableName: names[e.Table], Priority: e.Priority, Cookie: e.Cookie,
			Match: e.Match.String(), Packets: e.Packets, Bytes: e.Bytes}
		if known {
			fl.Actions = f.ActionsString()
		}
		if !attribute(&fl, pol, all, rules, e, f, known) {
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
	return out
}

// attribute fills fl's kind, rule and sharing if the entry serves pol.
func attribute(fl *Flow, pol openflow.Realization, all []openflow.Realization, rules map[uint32]openflow.RuleRef,
	e of.FlowEntry, installed of.Flow, known bool) bool {
	id := uint32(e.Cookie & openflow.CookieIDMask)
	switch e.Cookie & openflow.CookieCategoryMask {
	case openflow.CookiePolicy:
		// A clause flow shared by several rules carries the lowest of
		// their cookies and one conjunction() action per rule.
		ids := []uint32{id}
		fl.Kind = "rule"
		if known {
			for _, a := range installed.Actions {
				if c, ok := a.(of.Conjunction); ok {
					fl.Kind = "conjunction"
					if !slices.Contains(ids, c.ID) {
						ids = append(ids, c.ID)
					}
				}
			}
		}
		mine := -1
		for i, x := range ids {
			if _, ok := pol.Rules[x]; ok {
				mine = i
				break
			}
		}
		if mine < 0 {
			return false
		}
		ref := pol.Rules[ids[mine]]
		fl.Direction, fl.Rule = ref.Direction, ref.Index
		for i, x := range ids {
			if other, ok := rules[x]; ok && i != mine && other != ref {
				fl.SharedWith = append(fl.SharedWith, ruleName(other))
			}
		}
		slices.Sort(fl.SharedWith)
		fl.SharedWith = slices.Compact(fl.SharedWith)
	case openflow.CookieMetric:
		_, conj, ok := openflow.ParseMetricCookie(e.Cookie &^ openflow.CookieRoundMask)
		ref, mine := pol.Rules[conj]
		if !ok || !mine {
			return false
		}
		fl.Kind, fl.Direction, fl.Rule = "metric", ref.Direction, ref.Index
	case openflow.CookieIsolate:
		dir := isolationDirection(e.Table)
		if dir == "" || !isolates(pol, dir, id) {
			return false
		}
		fl.Kind, fl.Direction, fl.Rule = "isolation", dir, -1
		for _, other := range all {
			if policyName(other) != policyName(pol) && isolates(other, dir, id) {
				fl.SharedWith = append(fl.SharedWith, policyName(other))
			}
		}
	default:
		return false
	}
	return true
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

// isolates reports whether pol isolates the pod at ofport in dir.
func isolates(pol openflow.Realization, dir string, ofport uint32) bool {
	if !slices.Contains(pol.PolicyTypes, dir) {
		return false
	}
	for _, t := range pol.Targets {
		if uint32(t.OFPort) == ofport {
			return true
		}
	}
	return false
}

func podNames(pol openflow.Realization) []string {
	out := make([]string, len(pol.Targets))
	for i, t := range pol.Targets {
		out[i] = t.PodKey()
	}
	return out
}

// Summarize lists every policy with the number of its flows in OVS.
func Summarize(all []openflow.Realization, installed []of.Flow, entries []of.FlowEntry) []PolicySummary {
	out := make([]PolicySummary, 0, len(all))
	for _, pol := range all {
		pf := Attribute(pol, all, installed, entries, FlowFilter{})
		s := PolicySummary{Policy: pf.Policy, Targets: pf.Targets, Rules: countRules(pol), Flows: len(pf.Flows)}
		for _, f := range pf.Flows {
			if len(f.SharedWith) > 0 {
				s.Shared++
			}
		}
		out = append(out, s)
	}
	return out
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

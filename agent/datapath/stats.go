package datapath

import (
	"context"
	"fmt"
	"sort"

	"palisade.dev/palisade/agent/openflow"
	of "palisade.dev/palisade/ovs/openflow"
)

// FlowStatsReader reads flow counters from OVS (ovs/openflow.Client).
type FlowStatsReader interface {
	FlowStats(ctx context.Context, table uint8, cookie, cookieMask uint64) ([]of.FlowStat, error)
}

// RuleStats are the counters of one policy rule.
type RuleStats struct {
	Rule openflow.RuleRef
	// Sessions counts the new connections the rule allowed; Packets and
	// Bytes the later packets of those connections, both directions.
	Sessions, Packets, Bytes uint64
}

// DropStats are the counters of the default drops of isolated pods in one
// direction ("Ingress", "Egress").
type DropStats struct {
	Direction      string
	Packets, Bytes uint64
}

// Stats are the datapath's policy counters. Counters restart from zero
// when OVS re-adds a flow (an agent or OVS restart, a rule's id changing).
type Stats struct {
	Rules []RuleStats
	Drops []DropStats
}

// Stats reads the counters of the metric tables and the default drops
// from OVS and attributes them to the rules installed now.
func (d *Datapath) Stats(ctx context.Context, r FlowStatsReader) (Stats, error) {
	rules := d.realization().rules

	byRule := map[openflow.RuleRef]*RuleStats{}
	for _, t := range []of.Table{openflow.EgressMetricTable, openflow.IngressMetricTable} {
		flows, err := r.FlowStats(ctx, t.ID, openflow.CookieMetric, openflow.CookieCategoryMask)
		if err != nil {
			return Stats{}, fmt.Errorf("reading the counters of table %s: %w", t, err)
		}
		for _, f := range flows {
			kind, id, ok := openflow.ParseMetricCookie(f.Cookie)
			ref, known := rules[id]
			if !ok || !known {
				continue // a rule removed since, or a flow of someone else
			}
			rs := byRule[ref]
			if rs == nil {
				rs = &RuleStats{Rule: ref}
				byRule[ref] = rs
			}
			switch kind {
			case openflow.MetricSessions:
				rs.Sessions += f.Packets
			case openflow.MetricEstablished:
				rs.Packets += f.Packets
				rs.Bytes += f.Bytes
			}
		}
	}
	var st Stats
	for _, rs := range byRule {
		st.Rules = append(st.Rules, *rs)
	}
	sort.Slice(st.Rules, func(i, j int) bool { return ruleLess(st.Rules[i].Rule, st.Rules[j].Rule) })
	for _, dir := range []struct {
		name  string
		table of.Table
	}{{"Egress", openflow.EgressDefaultTable}, {"Ingress", openflow.IngressDefaultTable}} {
		flows, err := r.FlowStats(ctx, dir.table.ID, openflow.CookieIsolate, openflow.CookieCategoryMask)
		if err != nil {
			return Stats{}, fmt.Errorf("reading the counters of table %s: %w", dir.table, err)
		}
		ds := DropStats{Direction: dir.name}
		for _, f := range flows {
			ds.Packets += f.Packets
			ds.Bytes += f.Bytes
		}
		st.Drops = append(st.Drops, ds)
	}
	return st, nil
}

func ruleLess(a, b openflow.RuleRef) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	if a.Direction != b.Direction {
		return a.Direction < b.Direction
	}
	return a.Index < b.Index
}

// FlowCounts returns how many flows are installed in each table, by name.
func (d *Datapath) FlowCounts() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(openflow.Pipeline))
	for _, t := range openflow.Pipeline {
		out[t.Name] = 0
	}
	for _, f := range d.installed {
		out[f.Table.Name]++
	}
	return out
}

// Started reports whether Start installed the flows.
func (d *Datapath) Started() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

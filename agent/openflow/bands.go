package openflow

import (
	"fmt"
	"slices"

	of "palisade.dev/palisade/ovs/openflow"
)

// Priority bands.
//
// A clause flow that many rules share (one peer address, one target pod,
// one port) carries one conjunction() action of 16 bytes for each of them,
// and an OpenFlow message holds at most 65,535 bytes: about 4,089 actions.
// Thousands of rules allowing the same monitoring pod into pods of one
// node would need a larger flow. A rule table whose most shared clause
// flow has more than conjunctionsPerBand conjunctions therefore spreads its
// conjunctions over B priority bands: conjunction id goes to band id mod B,
// and all its flows (clauses and the conj_id flow; OVS requires one
// priority per conjunction) get priority priorityRule - band. A shared
// clause flow is then split into one flow per band.
//
// Verdicts do not change: when the clause flows a packet matches at one
// priority complete no conjunction, OVS's classifier goes on with the
// lower priorities, so a packet is allowed when any rule of any band
// allows it. The allow-all flows at priorityRule+1 stay above every band,
// the table's default at priorityDefault below.
//
// A band depends only on the id and B, and B only on how many rules share
// the most shared clause flow: rules keep their flows while others come
// and go, until B changes. Tables where no clause flow is shared by more
// than conjunctionsPerBand rules keep a single band at priorityRule.
const (
	// maxConjunctionsPerFlow is the most conjunction() actions a flow may
	// carry: 4,089 fit in a bundled flow_mod with an in_port match; this
	// leaves room for the largest clause match.
	maxConjunctionsPerFlow = 4000
	// conjunctionsPerBand is how many conjunctions the most shared clause
	// flow of a table may have in one band before the table takes
	// another band.
	conjunctionsPerBand = 2000
	// maxBands is how many bands fit between priorityRule and the
	// table's default flow at priorityDefault.
	maxBands = uint32(priorityRule - priorityDefault)
)

// ruleTables are the tables that hold conjunctions.
var ruleTables = []of.Table{EgressRuleTable, IngressRuleTable}

// splitBands puts the conjunctions of each rule table in as many bands as
// the table needs (see above). flows are merged and sorted, as merge
// returns them; so is the result. It fails when a table's conjunctions do
// not fit in maxBands bands.
func splitBands(flows []of.Flow) ([]of.Flow, error) {
	banded := false
	for _, t := range ruleTables {
		var shared [][]of.Action
		for _, f := range flows {
			if len(f.Actions) > conjunctionsPerBand && isBanded(f, t) {
				shared = append(shared, f.Actions)
			}
		}
		if len(shared) == 0 {
			continue // the common case: one band
		}
		n, err := bandCount(shared)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", t.Name, err)
		}
		if n > 1 {
			flows = band(flows, t, n)
			banded = true
		}
	}
	if banded {
		SortFlows(flows)
	}
	return flows, nil
}

// isBanded reports whether f is a policy flow of table t that bands move:
// a clause flow or a conj_id flow at priorityRule.
func isBanded(f of.Flow, t of.Table) bool {
	return f.Table == t && f.Priority == priorityRule && (f.Match.ConjID != 0 || isConjunctionOnly(f))
}

// bandCount is the number of bands B for a table whose most shared clause
// flows have the given conjunction() actions: the fewest from
// ceil(most/conjunctionsPerBand) (at most maxBands) up in which no flow
// has more than maxConjunctionsPerFlow actions in one band. With ids
// allocated in order, as agent/datapath does, the first B already puts at
// most about conjunctionsPerBand in a band. It fails when even maxBands
// bands leave a flow too large.
func bandCount(shared [][]of.Action) (uint32, error) {
	most := 0
	for _, as := range shared {
		most = max(most, len(as))
	}
	first := min(max(1, uint32((most+conjunctionsPerBand-1)/conjunctionsPerBand)), maxBands)
	counts := make([]int, maxBands)
	for n := first; n <= maxBands; n++ {
		if fits(shared, n, counts[:n]) {
			return n, nil
		}
	}
	return 0, fmt.Errorf("a clause flow shared by %d rules does not fit in %d priority bands of at most %d conjunctions each",
		most, maxBands, maxConjunctionsPerFlow)
}

// fits reports whether n bands leave every flow at most
// maxConjunctionsPerFlow actions; counts is scratch space of length n.
func fits(shared [][]of.Action, n uint32, counts []int) bool {
	for _, as := range shared {
		clear(counts)
		for _, a := range as {
			b := a.(of.Conjunction).ID % n
			counts[b]++
			if counts[b] > maxConjunctionsPerFlow {
				return false
			}
		}
	}
	return true
}

// bandPriority is the priority of conjunction id's flows in a table of n
// bands.
func bandPriority(id, n uint32) uint16 {
	return priorityRule - uint16(id%n)
}

// band moves table t's conjunctions into n bands: a conj_id flow to its
// conjunction's band, a clause flow split into one flow per band its
// conjunctions are in, each with the cookie of its lowest conjunction (as
// merge gives a shared flow). The result is no longer sorted.
func band(flows []of.Flow, t of.Table, n uint32) []of.Flow {
	out := make([]of.Flow, 0, len(flows))
	for _, f := range flows {
		switch {
		case !isBanded(f, t):
			out = append(out, f)
		case f.Match.ConjID != 0:
			f.Priority = bandPriority(f.Match.ConjID, n)
			out = append(out, f)
		default:
			byBand := make([][]of.Action, n)
			for _, a := range f.Actions {
				b := a.(of.Conjunction).ID % n
				byBand[b] = append(byBand[b], a)
			}
			for b, as := range byBand {
				if len(as) > 0 {
					g := f
					g.Priority = priorityRule - uint16(b)
					g.Actions = slices.Clip(as)
					g.Cookie = f.Cookie&^CookieIDMask | uint64(as[0].(of.Conjunction).ID)
					out = append(out, g)
				}
			}
		}
	}
	return out
}

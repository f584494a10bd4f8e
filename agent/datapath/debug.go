package datapath

import (
	"sort"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
)

// realization is how the policies are realized after one change.
type realization struct {
	policies []openflow.Realization
	// rules are the policies' rules by conjunction id.
	rules map[uint32]openflow.RuleRef
}

// realization returns how the policies are realized now. It is computed
// once per change of the state, outside the lock (the state and the ids
// are never modified, only replaced), and shared by every caller until
// the next change.
func (d *Datapath) realization() *realization {
	d.mu.Lock()
	r, gen, st, ids := d.realized, d.gen, d.state, d.conjIDs
	d.mu.Unlock()
	if r != nil {
		return r
	}
	pols := openflow.Realizations(st, func(key string) (uint32, bool) { id, ok := ids[key]; return id, ok })
	r = &realization{policies: pols, rules: openflow.RulesOf(pols)}
	d.mu.Lock()
	if d.gen == gen {
		d.realized = r
	}
	d.mu.Unlock()
	return r
}

// Policies returns how each policy is realized on this node now, with the
// conjunction ids of its rules (what the flows' cookies carry). The slice
// is shared: callers must not modify it.
func (d *Datapath) Policies() []openflow.Realization {
	return d.realization().policies
}

// Pods returns the local pods, sorted by namespace and name.
func (d *Datapath) Pods() []interfacestore.PodInterface {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]interfacestore.PodInterface, 0, len(d.state.Pods))
	for _, p := range d.state.Pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PodKey() < out[j].PodKey() })
	return out
}

// Network returns the node's gateway and tunnel, nil if not set.
func (d *Datapath) Network() *openflow.NodeNetwork {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state.Network == nil {
		return nil
	}
	n := *d.state.Network
	return &n
}

package datapath

import (
	"sort"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
)

// Policies returns how each policy is realized on this node now, with the
// conjunction ids of its rules (what the flows' cookies carry).
func (d *Datapath) Policies() []openflow.Realization {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := d.conjIDs
	return openflow.Realizations(d.state, func(key string) (uint32, bool) { id, ok := ids[key]; return id, ok })
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

// Package datapath keeps the node's OVS flows equal to what its pods and
// policies require. Every change is computed as values (agent/openflow
// renders the desired table, incrementally: only what the change touched
// is rendered and merged again), diffed against what was last installed,
// sent to OVS as one bundle, and only then committed to the cache: if OVS
// refuses the bundle, neither the bridge nor the cache changes.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// FlowApplier applies flow changes atomically (ovs/openflow.Client).
type FlowApplier interface {
	Apply(ctx context.Context, ch of.Changes) error
}

// Datapath is the agent's realized flow state. It is safe for concurrent use.
type Datapath struct {
	client FlowApplier

	mu      sync.Mutex
	started bool
	// state is what the installed flows were rendered from (before Start:
	// what they will be rendered from).
	state openflow.State
	// installed is what OVS accepted last, by flow key.
	installed map[string]of.Flow
	conjIDs   map[string]uint32
	// nextID is the next conjunction id to allocate; ids never wrap (a
	// sync that would run out fails).
	nextID uint32
	// realized caches how state's policies are realized with conjIDs
	// (Policies, Stats); nil until asked for after a change. gen counts
	// the changes of state and conjIDs, so a realization computed outside
	// the lock is cached only if nothing changed meanwhile.
	realized *realization
	gen      uint64
	// renderer renders the desired flows of each sync incrementally; it
	// is reset whenever what it rendered was not installed.
	renderer openflow.Incremental
	// replaceNext makes the next sync replace every flow: after a failed
	// Apply the bridge may hold what the cache does not (OVS may have
	// committed the bundle before the error, e.g. a failed datapath
	// flush or a lost reply), and a diff would never remove those flows.
	replaceNext bool
	// round goes into every cookie (openflow.SetRound).
	round uint8
	// observe, if set, is told about every sync that had changes to apply.
	observe func(replaceAll bool, took time.Duration, err error)
}

// SetRound sets the restart round carried in every flow's cookie. Call it
// before Start.
func (d *Datapath) SetRound(round uint8) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.round = round
}

// ObserveApply makes the datapath report every bundle it applies: whether
// it replaced all flows, how long rendering and applying took, and its
// error. Call it before Start.
func (d *Datapath) ObserveApply(f func(replaceAll bool, took time.Duration, err error)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.observe = f
}

// New returns a Datapath that holds changes until Start.
func New(client FlowApplier) *Datapath {
	return &Datapath{
		client:    client,
		state:     openflow.State{Pods: map[string]interfacestore.PodInterface{}, Policy: cp.NewNodeState()},
		installed: map[string]of.Flow{},
		conjIDs:   map[string]uint32{},
		nextID:    1,
	}
}

// Start installs the complete desired state in one bundle that also deletes
// every flow left from before (an agent restart), so the bridge never passes
// through a state with a hole. Until Start, the setters only record.
func (d *Datapath) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncLocked(ctx, d.state, true); err != nil {
		return err
	}
	d.started = true
	return nil
}

// Resync makes the next change replace every flow of the bridge; call it when
// OVS restarted and lost its flows.
func (d *Datapath) Resync(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncLocked(ctx, d.state, true)
}

// AddPod attaches a pod's port to the pipeline (and applies the policies
// that select it).
func (d *Datapath) AddPod(ctx context.Context, p interfacestore.PodInterface) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.state
	next.Pods = maps.Clone(d.state.Pods)
	next.Pods[p.PodKey()] = p
	return d.changeLocked(ctx, next)
}

// DeletePod removes a pod's flows.
func (d *Datapath) DeletePod(ctx context.Context, p interfacestore.PodInterface) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.state.Pods[p.PodKey()]; !ok {
		return nil
	}
	next := d.state
	next.Pods = maps.Clone(d.state.Pods)
	delete(next.Pods, p.PodKey())
	return d.changeLocked(ctx, next)
}

// SetPolicy replaces the node's policy state. The datapath keeps st: do
// not modify it afterwards.
func (d *Datapath) SetPolicy(ctx context.Context, st *cp.NodeState) error {
	if st == nil {
		st = cp.NewNodeState()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.state
	next.Policy = st
	return d.changeLocked(ctx, next)
}

// SetNetwork attaches the node's gateway and tunnel ports to the pipeline
// (nil detaches them).
func (d *Datapath) SetNetwork(ctx context.Context, n *openflow.NodeNetwork) error {
	if n != nil {
		if err := n.Validate(); err != nil {
			return fmt.Errorf("datapath: invalid node network: %w", err)
		}
		c := *n
		n = &c
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.state
	next.Network = n
	return d.changeLocked(ctx, next)
}

// SetRemoteNodes replaces the other nodes whose pods are reached through
// the tunnel.
func (d *Datapath) SetRemoteNodes(ctx context.Context, nodes []openflow.RemoteNode) error {
	nodes = slices.Clone(nodes)
	openflow.SortRemoteNodes(nodes)
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.state
	next.RemoteNodes = nodes
	return d.changeLocked(ctx, next)
}

// RemoteNodes returns the remote nodes the flows route to.
func (d *Datapath) RemoteNodes() []openflow.RemoteNode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.state.RemoteNodes)
}

// Flows returns the installed flows, sorted as in a dump. It copies them
// under the lock and sorts outside it.
func (d *Datapath) Flows() []of.Flow {
	d.mu.Lock()
	out := make([]of.Flow, 0, len(d.installed))
	for _, f := range d.installed {
		out = append(out, f)
	}
	d.mu.Unlock()
	openflow.SortFlows(out)
	return out
}

// FlowCount returns how many flows are installed.
func (d *Datapath) FlowCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.installed)
}

func (d *Datapath) changeLocked(ctx context.Context, next openflow.State) error {
	if !d.started {
		d.state = next
		d.realized = nil
		d.gen++
		return nil
	}
	return d.syncLocked(ctx, next, false)
}

// errConjIDsExhausted fails a sync that needs more conjunction ids than
// uint32 holds: id 0 is none (conj_id=0 would be tested by every packet).
var errConjIDsExhausted = errors.New("conjunction ids exhausted (2^32-1 allocated since the agent started); restart the agent to renumber")

// syncLocked renders the desired flows for next, applies the difference to
// what is installed, and commits everything on success.
func (d *Datapath) syncLocked(ctx context.Context, next openflow.State, replaceAll bool) error {
	start := time.Now()
	ids := maps.Clone(d.conjIDs)
	nextID := d.nextID
	used := map[string]uint32{}
	exhausted := false
	alloc := func(key string) uint32 {
		id, ok := ids[key]
		if !ok {
			if nextID == 0 { // wrapped: every id was allocated
				exhausted = true
				return 0
			}
			id = nextID
			nextID++
			ids[key] = id
		}
		used[key] = id
		return id
	}
	replaceAll = replaceAll || d.replaceNext
	if replaceAll {
		d.renderer.Reset()
	}
	delta, err := d.renderer.Update(next, alloc)
	// What the renderer rendered is kept only if it ends up installed.
	committed := false
	defer func() {
		if !committed {
			d.renderer.Reset()
		}
	}()
	if err != nil {
		return fmt.Errorf("rendering flows: %w", err)
	}
	if exhausted {
		return errConjIDsExhausted
	}
	desired := delta.Full
	if d.round != 0 {
		openflow.SetRound(desired, d.round)
		openflow.SetRound(delta.Changed, d.round)
	}
	// want is desired by key, for the diff and the next one. Replacing
	// everything needs no diff: the flows are indexed while OVS takes
	// the bundle. A partial delta changes the installed flows in place
	// once OVS took it.
	indexed := make(chan map[string]of.Flow, 1)
	var ch of.Changes
	var commit func()
	switch {
	case replaceAll:
		go func() { indexed <- byKey(desired, nil) }()
		ch = of.Changes{ReplaceAll: true, Add: desired}
	case desired != nil:
		keys := make([]string, len(desired))
		want := byKey(desired, keys)
		indexed <- want
		ch = diff(d.installed, want, desired, keys)
	default:
		ch, commit = diffDelta(d.installed, delta)
	}
	if !ch.Empty() {
		err := d.client.Apply(ctx, ch)
		if d.observe != nil {
			d.observe(replaceAll, time.Since(start), err)
		}
		if err != nil {
			d.replaceNext = true
			return fmt.Errorf("applying %d added, %d modified, %d deleted flows: %w",
				len(ch.Add), len(ch.Modify), len(ch.Delete), err)
		}
	}
	if commit != nil {
		commit()
	} else {
		d.installed = <-indexed
	}
	if !ch.Empty() {
		klog.FromContext(ctx).V(2).Info("Applied flows", "added", len(ch.Add), "modified", len(ch.Modify),
			"deleted", len(ch.Delete), "replaceAll", ch.ReplaceAll, "total", len(d.installed))
	}
	d.state = next
	d.conjIDs, d.nextID = used, nextID
	d.realized = nil
	d.gen++
	d.replaceNext = false
	committed = true
	return nil
}

// diffDelta computes the changes that turn installed into the table a
// partial delta describes (changed flows are compared with the installed
// ones as diff does), and commit updates installed to that table.
func diffDelta(installed map[string]of.Flow, delta openflow.Delta) (ch of.Changes, commit func()) {
	keys := make([]string, len(delta.Changed))
	for i, f := range delta.Changed {
		keys[i] = f.Key()
		old, ok := installed[keys[i]]
		switch {
		case !ok || old.Cookie != f.Cookie:
			ch.Add = append(ch.Add, f)
		case !sameActions(old.Actions, f.Actions):
			ch.Modify = append(ch.Modify, f)
		}
	}
	var gone []string
	for _, f := range delta.Removed {
		k := f.Key()
		if old, ok := installed[k]; ok {
			ch.Delete = append(ch.Delete, old)
			gone = append(gone, k)
		}
	}
	openflow.SortFlows(ch.Add)
	openflow.SortFlows(ch.Modify)
	openflow.SortFlows(ch.Delete)
	return ch, func() {
		for i, f := range delta.Changed {
			installed[keys[i]] = f
		}
		for _, k := range gone {
			delete(installed, k)
		}
	}
}

// byKey indexes flows by key; keys, if not nil, receives each flow's key.
func byKey(flows []of.Flow, keys []string) map[string]of.Flow {
	m := make(map[string]of.Flow, len(flows))
	for i, f := range flows {
		k := f.Key()
		m[k] = f
		if keys != nil {
			keys[i] = k
		}
	}
	return m
}

// diff computes the changes that turn installed into want (ordered, with
// their keys). A flow whose cookie changed is re-added (ADD overwrites the
// entry); one whose actions changed is modified in place, keeping its
// counters.
func diff(installed, want map[string]of.Flow, ordered []of.Flow, keys []string) of.Changes {
	var ch of.Changes
	for i, f := range ordered {
		old, ok := installed[keys[i]]
		switch {
		case !ok || old.Cookie != f.Cookie:
			ch.Add = append(ch.Add, f)
		case !sameActions(old.Actions, f.Actions):
			ch.Modify = append(ch.Modify, f)
		}
	}
	for k, f := range installed {
		if _, ok := want[k]; !ok {
			ch.Delete = append(ch.Delete, f)
		}
	}
	openflow.SortFlows(ch.Delete)
	return ch
}

// sameActions reports whether two action lists have the same ovs-ofctl
// text. Actions that are comparable values are compared as values (a clause
// flow shared by many rules has thousands); others by their text.
func sameActions(a, b []of.Action) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameAction(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameAction(a, b of.Action) bool {
	switch a.(type) {
	case of.Conjunction, of.LoadReg, of.GotoTable, of.Output, of.OutputReg:
		// Comparable values: equal interfaces are the same type and value
		// (a different dynamic type of b compares unequal, no panic).
		return a == b
	}
	return a.String() == b.String()
}

// Package apiserver serves the controller's model to agents. The Store
// receives every change of the model (it implements the NetworkPolicy
// controller's Publisher), keeps each node's span up to date incrementally
// and sends each node's watchers only the events of their span: whole
// policies, groups restricted to the node's members for AppliedToGroups,
// and member patches for group changes. An HTTP server streams the events
// as newline-delimited JSON on controlplane.WatchPath, over TLS, to agents
// that authenticated with their ServiceAccount token.
package apiserver

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"reflect"
	"slices"
	"sync"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// DefaultBufferSize is how many events a watcher may have pending, beyond its
// initial state, before it is dropped. It is also how many of a node's
// latest events the store keeps for agents that resume a watch.
const DefaultBufferSize = 1000

var (
	// ErrOverflow is returned by Watcher.Next when the watcher fell behind
	// and was dropped; its client must start a fresh watch.
	ErrOverflow = errors.New("watcher fell behind and was dropped; start a new watch")
	// ErrStopped is returned by Watcher.Next after Stop.
	ErrStopped = errors.New("watcher stopped")
)

// Store holds the published model and every node's span:
//
//   - an AppliedToGroup is in the span of the nodes it has members on, and a
//     node sees only its own members of it;
//   - a policy is in the span of its AppliedToGroups' nodes;
//   - an AddressGroup is in the span of the nodes of the policies using it.
//
// Spans are kept with reference counts, so the cost of a change is
// proportional to the nodes and members it touches. No method blocks on a
// watcher: a watcher that falls behind is dropped.
//
// Every event gets a resourceVersion (RV) from a store-wide counter. Once a
// node has been watched, the store keeps its latest events (at least
// bufferSize of them), so that an agent that reconnects with the token of
// the last event it received gets only the events it missed (Resume).
type Store struct {
	bufferSize  int
	incarnation string // changes with every store, so old tokens are refused

	mu       sync.Mutex
	synced   bool
	rv       uint64 // the RV of the latest event, or of the latest new node
	policies map[string]*policyItem
	atgs     map[string]*atgItem
	ags      map[string]*agItem
	nodes    map[string]*nodeItem
	// pending are the events of the current change, by node; they are
	// pushed to the watchers when the change is complete.
	pending map[*nodeItem][]controlplane.Event
}

type policyItem struct {
	policy *controlplane.NetworkPolicy
	ags    []string       // the distinct AddressGroups of policy's rules
	nodes  map[string]int // node -> number of policy's AppliedToGroups with members there
}

type atgItem struct {
	published bool
	byNode    map[string]map[string]*controlplane.GroupMember // node -> pod key -> member
	policies  map[string]struct{}
}

type agItem struct {
	published bool
	withPorts bool // members are sent with their ports
	members   map[string]*controlplane.GroupMember
	nodes     map[string]int // node -> number of policies in its span using the group
	policies  map[string]struct{}
	snapshot  *controlplane.AddressGroup // the whole group as sent; nil after a change
}

type nodeItem struct {
	name     string
	policies map[string]struct{}
	atgs     map[string]struct{}
	ags      map[string]struct{}
	watchers map[*Watcher]struct{}

	// Once the node has been watched (tracked), history holds its events
	// in RV order: every event of the node with an RV above floor.
	tracked bool
	floor   uint64
	history []controlplane.Event
}

// NewStore returns a store whose watchers may each have bufferSize events
// pending (beyond their initial state) before they are dropped.
func NewStore(bufferSize int) *Store {
	if bufferSize < 1 {
		bufferSize = 1
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id) // never fails
	return &Store{
		bufferSize:  bufferSize,
		incarnation: hex.EncodeToString(id),
		policies:    map[string]*policyItem{},
		atgs:        map[string]*atgItem{},
		ags:         map[string]*agItem{},
		nodes:       map[string]*nodeItem{},
		pending:     map[*nodeItem][]controlplane.Event{},
	}
}

// SetSynced marks the model complete: watchers waiting for their initial
// state get it now.
func (s *Store) SetSynced() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced {
		return
	}
	s.synced = true
	for _, n := range s.nodes {
		if len(n.watchers) == 0 {
			continue
		}
		s.track(n)
		initial := s.initialEvents(n)
		for w := range n.watchers {
			w.push(initial, true)
		}
	}
}

// UpdatePolicy adds or replaces a policy.
func (s *Store) UpdatePolicy(p *controlplane.NetworkPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flush()
	it, ok := s.policies[p.Name]
	if !ok {
		it = &policyItem{}
		s.policies[p.Name] = it
	}
	old, oldAGs, oldNodes := it.policy, it.ags, it.nodes
	if old != nil {
		s.deregister(p.Name, old, oldAGs)
	}
	newAGs := addressGroupsOf(p)
	newNodes := map[string]int{}
	for _, g := range p.AppliedToGroups {
		a := s.atg(g)
		a.policies[p.Name] = struct{}{}
		for node := range a.byNode {
			newNodes[node]++
		}
	}
	for _, g := range newAGs {
		s.ag(g).policies[p.Name] = struct{}{}
	}
	it.policy, it.ags, it.nodes = p, newAGs, newNodes
	changed := old == nil || !reflect.DeepEqual(old, p)

	for node := range newNodes {
		n := s.node(node)
		if _, was := oldNodes[node]; !was {
			s.policyEnter(n, it)
			continue
		}
		for _, g := range newAGs {
			if !slices.Contains(oldAGs, g) {
				s.agRef(n, g)
			}
		}
		if changed {
			s.emit(n, func() controlplane.Event {
				return controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindNetworkPolicy, Name: p.Name, NetworkPolicy: p}
			})
		}
		for _, g := range oldAGs {
			if !slices.Contains(newAGs, g) {
				s.agUnref(n, g)
			}
		}
	}
	for node := range oldNodes {
		if _, is := newNodes[node]; !is {
			n := s.node(node)
			s.policyLeave(n, p.Name, oldAGs)
			s.collectNode(n)
		}
	}
	if old != nil {
		s.collectGroups(old.AppliedToGroups, oldAGs)
	}
}

// DeletePolicy deletes a policy.
func (s *Store) DeletePolicy(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flush()
	it, ok := s.policies[name]
	if !ok {
		return
	}
	for node := range it.nodes {
		n := s.node(node)
		s.policyLeave(n, name, it.ags)
		s.collectNode(n)
	}
	s.deregister(name, it.policy, it.ags)
	delete(s.policies, name)
	s.collectGroups(it.policy.AppliedToGroups, it.ags)
}

// UpdateGroup changes the members of a group, creating it if needed.
func (s *Store) UpdateGroup(kind controlplane.Kind, name string, added, removed []*controlplane.GroupMember) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flush()
	switch kind {
	case controlplane.KindAppliedToGroup:
		a := s.atg(name)
		a.published = true
		s.updateATG(name, a, added, removed)
	case controlplane.KindAddressGroup:
		a := s.ag(name)
		a.published = true
		s.updateAG(name, a, added, removed)
	}
}

// DeleteGroup deletes a group. Policies still referring to it (there should
// be none) see it without members.
func (s *Store) DeleteGroup(kind controlplane.Kind, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flush()
	switch kind {
	case controlplane.KindAppliedToGroup:
		a, ok := s.atgs[name]
		if !ok {
			return
		}
		var all []*controlplane.GroupMember
		for _, ms := range a.byNode {
			for _, m := range ms {
				all = append(all, m)
			}
		}
		s.updateATG(name, a, nil, all)
		a.published = false
		s.collectGroups([]string{name}, nil)
	case controlplane.KindAddressGroup:
		a, ok := s.ags[name]
		if !ok {
			return
		}
		all := make([]*controlplane.GroupMember, 0, len(a.members))
		for _, m := range a.members {
			all = append(all, m)
		}
		s.updateAG(name, a, nil, all)
		a.published = false
		s.collectGroups(nil, []string{name})
	}
}

// SetAddressGroupPorts says whether the AddressGroup's members are sent with
// their named ports. AddressGroup members are always sent without their
// node (GroupMember.AsPeer). When it changes, the nodes of the group's span
// get the members that have ports again, with or without them.
func (s *Store) SetAddressGroupPorts(name string, withPorts bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flush()
	a := s.ag(name)
	if a.withPorts == withPorts {
		return
	}
	a.withPorts = withPorts
	a.snapshot = nil
	var again []*controlplane.GroupMember
	for _, m := range a.members {
		if len(m.Ports) > 0 {
			again = append(again, m)
		}
	}
	if len(again) == 0 {
		return
	}
	var ev *controlplane.Event // built once for all nodes
	for node := range a.nodes {
		s.emit(s.nodes[node], func() controlplane.Event {
			if ev == nil {
				ev = &controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindAddressGroup, Name: name,
					Patch: newPatch(again, again, peerForm(withPorts))}
			}
			return *ev
		})
	}
}

// nodeChange is what one group change does to one node's members.
type nodeChange struct {
	before         int
	added, removed []*controlplane.GroupMember
}

func (s *Store) updateATG(name string, a *atgItem, added, removed []*controlplane.GroupMember) {
	changes := map[string]*nodeChange{}
	change := func(node string) *nodeChange {
		c, ok := changes[node]
		if !ok {
			c = &nodeChange{before: len(a.byNode[node])}
			changes[node] = c
		}
		return c
	}
	for _, m := range removed {
		if ms := a.byNode[m.Node]; ms[m.Key()] != nil {
			c := change(m.Node)
			delete(ms, m.Key())
			c.removed = append(c.removed, m)
		}
	}
	for _, m := range added {
		c := change(m.Node)
		ms, ok := a.byNode[m.Node]
		if !ok {
			ms = map[string]*controlplane.GroupMember{}
			a.byNode[m.Node] = ms
		}
		ms[m.Key()] = m
		c.added = append(c.added, m)
	}
	for node, c := range changes {
		after := len(a.byNode[node])
		if after == 0 {
			delete(a.byNode, node)
		}
		n := s.node(node)
		switch {
		case c.before == 0 && after > 0:
			// The node enters the group's span, and so the span of the
			// policies applied to it.
			n.atgs[name] = struct{}{}
			s.emit(n, func() controlplane.Event {
				return controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAppliedToGroup, Name: name,
					AppliedToGroup: &controlplane.AppliedToGroup{Name: name, Members: sortedMembers(a.byNode[node])}}
			})
			for pname := range a.policies {
				it := s.policies[pname]
				it.nodes[node]++
				if it.nodes[node] == 1 {
					s.policyEnter(n, it)
				}
			}
		case c.before > 0 && after == 0:
			for pname := range a.policies {
				it := s.policies[pname]
				it.nodes[node]--
				if it.nodes[node] == 0 {
					delete(it.nodes, node)
					s.policyLeave(n, pname, it.ags)
				}
			}
			delete(n.atgs, name)
			s.emit(n, func() controlplane.Event {
				return controlplane.Event{Type: controlplane.Deleted, Kind: controlplane.KindAppliedToGroup, Name: name}
			})
			s.collectNode(n)
		case after > 0:
			s.emit(n, func() controlplane.Event {
				return controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindAppliedToGroup, Name: name,
					Patch: newPatch(c.added, c.removed, nil)}
			})
		}
	}
}

func (s *Store) updateAG(name string, a *agItem, added, removed []*controlplane.GroupMember) {
	var gone []*controlplane.GroupMember
	for _, m := range removed {
		if a.members[m.Key()] != nil {
			delete(a.members, m.Key())
			gone = append(gone, m)
		}
	}
	for _, m := range added {
		a.members[m.Key()] = m
	}
	if len(gone) == 0 && len(added) == 0 {
		return
	}
	a.snapshot = nil
	var ev *controlplane.Event // built once for all nodes
	for node := range a.nodes {
		s.emit(s.nodes[node], func() controlplane.Event {
			if ev == nil {
				ev = &controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindAddressGroup, Name: name,
					Patch: newPatch(added, gone, peerForm(a.withPorts))}
			}
			return *ev
		})
	}
}

// policyEnter puts a policy into n's span: its AddressGroups first.
func (s *Store) policyEnter(n *nodeItem, it *policyItem) {
	for _, g := range it.ags {
		s.agRef(n, g)
	}
	n.policies[it.policy.Name] = struct{}{}
	p := it.policy
	s.emit(n, func() controlplane.Event {
		return controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindNetworkPolicy, Name: p.Name, NetworkPolicy: p}
	})
}

// policyLeave takes a policy out of n's span, then the AddressGroups only
// it used there.
func (s *Store) policyLeave(n *nodeItem, name string, ags []string) {
	delete(n.policies, name)
	s.emit(n, func() controlplane.Event {
		return controlplane.Event{Type: controlplane.Deleted, Kind: controlplane.KindNetworkPolicy, Name: name}
	})
	for _, g := range ags {
		s.agUnref(n, g)
	}
}

func (s *Store) agRef(n *nodeItem, name string) {
	a := s.ag(name)
	a.nodes[n.name]++
	if a.nodes[n.name] > 1 {
		return
	}
	n.ags[name] = struct{}{}
	s.emit(n, func() controlplane.Event {
		return controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAddressGroup, Name: name, AddressGroup: s.agSnapshot(name, a)}
	})
}

func (s *Store) agUnref(n *nodeItem, name string) {
	a := s.ags[name]
	a.nodes[n.name]--
	if a.nodes[n.name] > 0 {
		return
	}
	delete(a.nodes, n.name)
	delete(n.ags, name)
	s.emit(n, func() controlplane.Event {
		return controlplane.Event{Type: controlplane.Deleted, Kind: controlplane.KindAddressGroup, Name: name}
	})
}

// deregister removes a policy version's references from its groups.
func (s *Store) deregister(name string, p *controlplane.NetworkPolicy, ags []string) {
	for _, g := range p.AppliedToGroups {
		delete(s.atgs[g].policies, name)
	}
	for _, g := range ags {
		delete(s.ags[g].policies, name)
	}
}

// collectGroups drops groups that are neither published nor used.
func (s *Store) collectGroups(atgs, ags []string) {
	for _, g := range atgs {
		if a, ok := s.atgs[g]; ok && !a.published && len(a.policies) == 0 && len(a.byNode) == 0 {
			delete(s.atgs, g)
		}
	}
	for _, g := range ags {
		if a, ok := s.ags[g]; ok && !a.published && len(a.policies) == 0 {
			delete(s.ags, g)
		}
	}
}

func (s *Store) atg(name string) *atgItem {
	a, ok := s.atgs[name]
	if !ok {
		a = &atgItem{byNode: map[string]map[string]*controlplane.GroupMember{}, policies: map[string]struct{}{}}
		s.atgs[name] = a
	}
	return a
}

func (s *Store) ag(name string) *agItem {
	a, ok := s.ags[name]
	if !ok {
		a = &agItem{members: map[string]*controlplane.GroupMember{}, nodes: map[string]int{}, policies: map[string]struct{}{}}
		s.ags[name] = a
	}
	return a
}

func (s *Store) node(name string) *nodeItem {
	n, ok := s.nodes[name]
	if !ok {
		// A new RV, above every token given out for an earlier item of
		// the same node: those cannot resume here.
		s.rv++
		n = &nodeItem{
			name:     name,
			policies: map[string]struct{}{},
			atgs:     map[string]struct{}{},
			ags:      map[string]struct{}{},
			watchers: map[*Watcher]struct{}{},
			floor:    s.rv,
		}
		s.nodes[name] = n
	}
	return n
}

// track starts keeping n's history, from now on.
func (s *Store) track(n *nodeItem) {
	if !n.tracked {
		n.tracked, n.floor = true, s.rv
	}
}

// record appends events to n's history, keeping at least bufferSize of
// them (trimmed in batches, so appending stays cheap).
func (s *Store) record(n *nodeItem, events []controlplane.Event) {
	n.history = append(n.history, events...)
	if len(n.history) > 2*s.bufferSize {
		drop := len(n.history) - s.bufferSize
		n.floor = n.history[drop-1].RV
		n.history = append([]controlplane.Event(nil), n.history[drop:]...)
	}
}

// collectNode drops a node with an empty span and no watchers.
func (s *Store) collectNode(n *nodeItem) {
	if len(n.policies) == 0 && len(n.atgs) == 0 && len(n.ags) == 0 && len(n.watchers) == 0 && len(s.pending[n]) == 0 {
		delete(s.nodes, n.name)
	}
}

func (s *Store) agSnapshot(name string, a *agItem) *controlplane.AddressGroup {
	if a.snapshot == nil {
		members := sortedMembers(a.members)
		for i := range members {
			members[i] = members[i].AsPeer(a.withPorts)
		}
		a.snapshot = &controlplane.AddressGroup{Name: name, Members: members}
	}
	return a.snapshot
}

// emit queues the event made by ev for n's watchers and history, with the
// next RV; nothing is made for a node that was never watched, or before the
// model is synced (watchers then get their initial state at SetSynced).
func (s *Store) emit(n *nodeItem, ev func() controlplane.Event) {
	if !s.synced || !n.tracked {
		return
	}
	e := ev()
	s.rv++
	e.RV = s.rv
	s.pending[n] = append(s.pending[n], e)
}

// flush records the pending events of the change and pushes them to the
// watchers, dropping the watchers that fell behind.
func (s *Store) flush() {
	for n, events := range s.pending {
		s.record(n, events)
		for w := range n.watchers {
			if !w.push(events, false) {
				delete(n.watchers, w)
			}
		}
		delete(s.pending, n)
		s.collectNode(n)
	}
}

// initialEvents are n's span as ADDED events, groups before the policies
// that use them, then a BOOKMARK, all at the current RV.
func (s *Store) initialEvents(n *nodeItem) []controlplane.Event {
	events := make([]controlplane.Event, 0, len(n.ags)+len(n.atgs)+len(n.policies)+1)
	for _, name := range sortedKeys(n.ags) {
		events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAddressGroup, Name: name, RV: s.rv,
			AddressGroup: s.agSnapshot(name, s.ags[name])})
	}
	for _, name := range sortedKeys(n.atgs) {
		events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAppliedToGroup, Name: name, RV: s.rv,
			AppliedToGroup: &controlplane.AppliedToGroup{Name: name, Members: sortedMembers(s.atgs[name].byNode[n.name])}})
	}
	for _, name := range sortedKeys(n.policies) {
		events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindNetworkPolicy, Name: name, RV: s.rv,
			NetworkPolicy: s.policies[name].policy})
	}
	return append(events, s.bookmark())
}

// bookmark is a BOOKMARK at the current RV.
func (s *Store) bookmark() controlplane.Event {
	return controlplane.Event{Type: controlplane.Bookmark, RV: s.rv, Incarnation: s.incarnation}
}

// NodeState returns a copy of node's span as the store holds it.
func (s *Store) NodeState(node string) *controlplane.NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := controlplane.NewNodeState()
	n, ok := s.nodes[node]
	if !ok {
		return st
	}
	for _, ev := range s.initialEvents(n) {
		switch ev.Kind {
		case controlplane.KindAddressGroup:
			st.AddressGroups[ev.Name] = ev.AddressGroup.DeepCopy()
		case controlplane.KindAppliedToGroup:
			st.AppliedToGroups[ev.Name] = ev.AppliedToGroup.DeepCopy()
		case controlplane.KindNetworkPolicy:
			st.Policies[ev.Name] = ev.NetworkPolicy.DeepCopy()
		}
	}
	return st
}

// Watch starts a watch of node's span. The watcher first gets an ADDED event
// for every object in the span and a BOOKMARK (as soon as the model is
// synced), then the changes. Call Stop when done.
func (s *Store) Watch(node string) *Watcher {
	w, _ := s.Resume(node, "")
	return w
}

// Resume starts a watch of node's span from a resume token: the RV of the
// last event the client received (FormatResumeToken of the BOOKMARK's
// Incarnation and an event's RV). If the store holds every event of the
// node since then, the watcher gets those events and a BOOKMARK, then the
// changes, and resumed is true. Otherwise (no or an invalid token, one from
// another store, or too old) it is a watch as Watch starts it.
func (s *Store) Resume(node, token string) (w *Watcher, resumed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.node(node)
	w = &Watcher{store: s, node: node, limit: s.bufferSize, ready: make(chan struct{}, 1)}
	if s.synced {
		if missed, ok := s.since(n, token); ok {
			w.push(append(missed, s.bookmark()), true)
			resumed = true
		} else {
			s.track(n)
			w.push(s.initialEvents(n), true)
		}
	}
	n.watchers[w] = struct{}{}
	return w, resumed
}

// since returns n's events after token, if the history holds all of them.
func (s *Store) since(n *nodeItem, token string) ([]controlplane.Event, bool) {
	if token == "" || !n.tracked {
		return nil, false
	}
	incarnation, rv, err := controlplane.ParseResumeToken(token)
	if err != nil || incarnation != s.incarnation || rv < n.floor || rv > s.rv {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(n.history, rv+1, func(e controlplane.Event, rv uint64) int { return cmp.Compare(e.RV, rv) })
	return slices.Clone(n.history[i:]), true
}

func (s *Store) remove(w *Watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[w.node]
	if !ok {
		return
	}
	delete(n.watchers, w)
	s.collectNode(n)
}

// Watcher is one watch of a node's span. Its events wait in a bounded queue.
type Watcher struct {
	store *Store
	node  string

	mu     sync.Mutex
	queue  []controlplane.Event
	limit  int
	err    error // set once closed
	ready  chan struct{}
	closed bool
}

// push queues events. Initial events raise the limit by their number, so a
// large initial state does not count against the buffer. It returns false if
// the watcher is closed or was just dropped for falling behind.
func (w *Watcher) push(events []controlplane.Event, initial bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if initial {
		w.limit += len(events)
	} else if len(w.queue)+len(events) > w.limit {
		w.closeLocked(ErrOverflow)
		return false
	}
	w.queue = append(w.queue, events...)
	w.signal()
	return true
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

func (w *Watcher) closeLocked(err error) {
	w.closed = true
	w.err = err
	w.queue = nil
	w.signal()
}

// Next blocks until events are pending and returns all of them. It returns
// ErrOverflow if the watcher was dropped, ErrStopped after Stop, or the
// context's error.
func (w *Watcher) Next(ctx context.Context) ([]controlplane.Event, error) {
	for {
		w.mu.Lock()
		if w.closed {
			err := w.err
			w.mu.Unlock()
			return nil, err
		}
		if len(w.queue) > 0 {
			events := w.queue
			w.queue = nil
			if w.limit > w.store.bufferSize {
				// The initial state has been taken.
				w.limit = w.store.bufferSize
			}
			w.mu.Unlock()
			return events, nil
		}
		w.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Stop ends the watch and releases it from the store.
func (w *Watcher) Stop() {
	w.mu.Lock()
	if !w.closed {
		w.closeLocked(ErrStopped)
	}
	w.mu.Unlock()
	w.store.remove(w)
}

// newPatch is the patch of a group change, its added members in the form
// form makes (nil: as they are). Removed members carry only their Pod:
// agents match members by pod, and a small patch is what makes a change
// cheap to send.
func newPatch(added, removed []*controlplane.GroupMember, form func(controlplane.GroupMember) controlplane.GroupMember) *controlplane.GroupPatch {
	p := &controlplane.GroupPatch{}
	for _, m := range added {
		if form != nil {
			p.Added = append(p.Added, form(*m))
		} else {
			p.Added = append(p.Added, *m)
		}
	}
	for _, m := range removed {
		p.Removed = append(p.Removed, controlplane.GroupMember{Pod: m.Pod})
	}
	byKey := func(a, b controlplane.GroupMember) int { return cmp.Compare(a.Key(), b.Key()) }
	slices.SortFunc(p.Added, byKey)
	slices.SortFunc(p.Removed, byKey)
	return p
}

// peerForm is how AddressGroup members are sent.
func peerForm(withPorts bool) func(controlplane.GroupMember) controlplane.GroupMember {
	return func(m controlplane.GroupMember) controlplane.GroupMember { return m.AsPeer(withPorts) }
}

// addressGroupsOf returns the distinct AddressGroups of p's rules in order
// of first use.
func addressGroupsOf(p *controlplane.NetworkPolicy) []string {
	var out []string
	for _, r := range p.Rules {
		for _, peer := range []controlplane.Peer{r.From, r.To} {
			for _, g := range peer.AddressGroups {
				if !slices.Contains(out, g) {
					out = append(out, g)
				}
			}
		}
	}
	return out
}

func sortedMembers(ms map[string]*controlplane.GroupMember) []controlplane.GroupMember {
	out := make([]controlplane.GroupMember, 0, len(ms))
	for _, m := range ms {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b controlplane.GroupMember) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

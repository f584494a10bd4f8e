// Package apiserver serves the controller's model to agents: a Store turns each
// new model into per-node watch events (whole policies, group patches), and an
// HTTP server streams them as newline-delimited JSON on
// controlplane.WatchPath.
package apiserver

import (
	"cmp"
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/networkpolicy"
)

// DefaultBufferSize is how many events a watcher may have pending, beyond its
// initial state, before it is dropped.
const DefaultBufferSize = 1000

var (
	// ErrOverflow is returned by Watcher.Next when the watcher fell behind
	// and was dropped; its client must start a fresh watch.
	ErrOverflow = errors.New("watcher fell behind and was dropped; start a new watch")
	// ErrStopped is returned by Watcher.Next after Stop.
	ErrStopped = errors.New("watcher stopped")
)

// Store holds the latest model and, for every node that has watchers, the
// node's state as last sent. Publishing a model sends each watcher the
// difference for its node. Publish never blocks on a watcher.
type Store struct {
	bufferSize int

	mu    sync.Mutex
	model *networkpolicy.Model
	nodes map[string]*nodeWatchers
}

// nodeWatchers are the watchers of one node and the state they were sent.
type nodeWatchers struct {
	// sent is nil until a model is known; then the watchers get their
	// initial state with the first model.
	sent     *controlplane.NodeState
	watchers map[*Watcher]struct{}
}

// NewStore returns a store whose watchers may each have bufferSize events
// pending (beyond their initial state) before they are dropped.
func NewStore(bufferSize int) *Store {
	if bufferSize < 1 {
		bufferSize = 1
	}
	return &Store{bufferSize: bufferSize, nodes: map[string]*nodeWatchers{}}
}

// Publish makes m the current model and sends every watcher the changes of
// its node's span. It implements networkpolicy.Publisher.
func (s *Store) Publish(m *networkpolicy.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.model = m
	for node, nw := range s.nodes {
		state := m.NodeState(node)
		first := nw.sent == nil
		events := Diff(nw.sent, state)
		nw.sent = state
		if first {
			events = append(events, controlplane.Event{Type: controlplane.Bookmark})
		}
		if len(events) == 0 {
			continue
		}
		for w := range nw.watchers {
			if !w.push(events, first) {
				delete(nw.watchers, w)
			}
		}
	}
}

// Watch starts a watch of node's span. The watcher first gets an ADDED event
// for every object in the span and a BOOKMARK (as soon as a model has been
// published), then the changes. Call Stop when done.
func (s *Store) Watch(node string) *Watcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	nw, ok := s.nodes[node]
	if !ok {
		nw = &nodeWatchers{watchers: map[*Watcher]struct{}{}}
		if s.model != nil {
			nw.sent = s.model.NodeState(node)
		}
		s.nodes[node] = nw
	}
	w := &Watcher{store: s, node: node, limit: s.bufferSize, ready: make(chan struct{}, 1)}
	if nw.sent != nil {
		initial := append(Diff(nil, nw.sent), controlplane.Event{Type: controlplane.Bookmark})
		w.push(initial, true)
	}
	nw.watchers[w] = struct{}{}
	return w
}

func (s *Store) remove(w *Watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nw, ok := s.nodes[w.node]
	if !ok {
		return
	}
	delete(nw.watchers, w)
	if len(nw.watchers) == 0 {
		delete(s.nodes, w.node)
	}
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

// Diff returns the events that turn the state from into the state to (either
// may be nil, meaning empty). Groups come before the policies that use them
// and are deleted after the policies that used them: added and modified
// groups, added and modified policies, deleted policies, deleted groups.
func Diff(from, to *controlplane.NodeState) []controlplane.Event {
	if from == nil {
		from = controlplane.NewNodeState()
	}
	if to == nil {
		to = controlplane.NewNodeState()
	}
	var events []controlplane.Event
	for _, name := range sortedKeys(to.AddressGroups) {
		g := to.AddressGroups[name]
		old, ok := from.AddressGroups[name]
		if !ok {
			events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAddressGroup, Name: name, AddressGroup: g})
		} else if p := patch(name, old.Members, g.Members); p != nil {
			events = append(events, controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindAddressGroup, Name: name, Patch: p})
		}
	}
	for _, name := range sortedKeys(to.AppliedToGroups) {
		g := to.AppliedToGroups[name]
		old, ok := from.AppliedToGroups[name]
		if !ok {
			events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindAppliedToGroup, Name: name, AppliedToGroup: g})
		} else if p := patch(name, old.Members, g.Members); p != nil {
			events = append(events, controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindAppliedToGroup, Name: name, Patch: p})
		}
	}
	for _, name := range sortedKeys(to.Policies) {
		np := to.Policies[name]
		old, ok := from.Policies[name]
		if !ok {
			events = append(events, controlplane.Event{Type: controlplane.Added, Kind: controlplane.KindNetworkPolicy, Name: name, NetworkPolicy: np})
		} else if !reflect.DeepEqual(old, np) {
			events = append(events, controlplane.Event{Type: controlplane.Modified, Kind: controlplane.KindNetworkPolicy, Name: name, NetworkPolicy: np})
		}
	}
	events = appendDeleted(events, controlplane.KindNetworkPolicy, from.Policies, to.Policies)
	events = appendDeleted(events, controlplane.KindAppliedToGroup, from.AppliedToGroups, to.AppliedToGroups)
	events = appendDeleted(events, controlplane.KindAddressGroup, from.AddressGroups, to.AddressGroups)
	return events
}

func appendDeleted[V any](events []controlplane.Event, kind controlplane.Kind, from, to map[string]V) []controlplane.Event {
	for _, name := range sortedKeys(from) {
		if _, ok := to[name]; !ok {
			events = append(events, controlplane.Event{Type: controlplane.Deleted, Kind: kind, Name: name})
		}
	}
	return events
}

// patch returns the members added and removed between old and new, or nil if
// there is no change. A member whose IPs, node or ports changed is removed
// (old version) and added (new version).
func patch(name string, old, new []controlplane.GroupMember) *controlplane.GroupPatch {
	oldByKey := make(map[string]controlplane.GroupMember, len(old))
	for _, m := range old {
		oldByKey[m.Key()] = m
	}
	p := &controlplane.GroupPatch{Name: name}
	seen := make(map[string]bool, len(new))
	for _, m := range new {
		seen[m.Key()] = true
		o, ok := oldByKey[m.Key()]
		if ok && reflect.DeepEqual(o, m) {
			continue
		}
		if ok {
			p.Removed = append(p.Removed, o)
		}
		p.Added = append(p.Added, m)
	}
	for _, m := range old {
		if !seen[m.Key()] {
			p.Removed = append(p.Removed, m)
		}
	}
	if len(p.Added) == 0 && len(p.Removed) == 0 {
		return nil
	}
	byKey := func(a, b controlplane.GroupMember) int { return cmp.Compare(a.Key(), b.Key()) }
	slices.SortFunc(p.Added, byKey)
	slices.SortFunc(p.Removed, byKey)
	return p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

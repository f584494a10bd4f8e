package networkpolicy

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/grouping"
)

// Publisher receives every change of the model. The order keeps consumers
// consistent: a group is published before the first policy that refers to
// it, and deleted only after every policy that referred to it was updated
// or deleted. Members are shared and immutable: consumers must not modify
// them. The controller's watch store implements it.
type Publisher interface {
	// UpdateGroup changes the members of the group kind/name; the first
	// update of a group creates it (possibly without members). removed
	// holds the members as they were published.
	UpdateGroup(kind controlplane.Kind, name string, added, removed []*controlplane.GroupMember)
	// DeleteGroup deletes the group kind/name.
	DeleteGroup(kind controlplane.Kind, name string)
	// SetAddressGroupPorts says whether some policy needs the named ports
	// of the AddressGroup's members (an egress rule with a named port has
	// the group as a peer). It is set before such a policy is published
	// and cleared after the last one was updated or deleted.
	SetAddressGroupPorts(name string, withPorts bool)
	// UpdatePolicy adds or replaces a policy.
	UpdatePolicy(p *controlplane.NetworkPolicy)
	// DeletePolicy deletes a policy by name.
	DeletePolicy(name string)
	// SetSynced says that the model reflects the cluster's initial state:
	// consumers may now serve it as complete.
	SetSynced()
}

// State is the model maintained incrementally. Pods live in a grouping
// index keyed by label set; a group is the index's selector under the
// group's name. Pod and namespace events mark the affected groups' pods
// dirty and return those groups' names; SyncGroup then re-evaluates only
// the dirty pods. SyncPolicy converts one policy, creating its groups
// (computed in full at once) before publishing it and collecting the
// groups it no longer uses after.
//
// Every method is safe for concurrent use; SyncGroup and SyncPolicy are
// idempotent and read only current state (level-triggered).
type State struct {
	mu        sync.Mutex
	publisher Publisher
	// index holds every pod; its value is the pod's member, or nil when
	// the pod cannot be a member (no IP, terminated, host network).
	index    *grouping.Index[*controlplane.GroupMember]
	policies map[string]*policyState // by the NetworkPolicy's namespace/name
	groups   map[string]*group       // by name
	errors   map[string]error        // invalid policies by namespace/name
}

type policyState struct {
	policy        *controlplane.NetworkPolicy
	appliedTo     string
	addressGroups []string
}

// group is a group selector with the members last published and the pods
// whose membership must be re-evaluated. A group may be an AppliedToGroup,
// an AddressGroup or both, as long as some policy uses it as such. As an
// AddressGroup, portRefs policies need its members' ports. (int32 counts
// keep the struct small: there is one per selector.)
type group struct {
	name                              string
	appliedToRefs, addrRefs, portRefs int32
	members                           map[string]*controlplane.GroupMember
	dirty                             map[string]struct{}
}

// NewState returns an empty model that publishes to p.
func NewState(p Publisher) *State {
	return &State{
		publisher: p,
		index:     grouping.NewIndex[*controlplane.GroupMember](),
		policies:  map[string]*policyState{},
		groups:    map[string]*group{},
		errors:    map[string]error{},
	}
}

// UpsertPod records a pod's current version and returns the names of the
// groups to sync.
func (s *State) UpsertPod(p *corev1.Pod) []string {
	var m *controlplane.GroupMember
	if isMember(p) {
		v := memberOf(p)
		m = &v
	}
	key := grouping.PodKey(p.Namespace, p.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.index.Pod(key); ok && equalMembers(old, m) {
		if cur, _ := s.index.Labels(key); labels.Equals(cur, labels.Set(p.Labels)) {
			return nil // nothing a group depends on changed
		}
		m = old // keep the published value: no spurious patches
	}
	return s.markDirty(s.index.SetPod(p.Namespace, p.Name, p.Labels, m), key)
}

// DeletePod forgets a pod and returns the names of the groups to sync.
func (s *State) DeletePod(namespace, name string) []string {
	key := grouping.PodKey(namespace, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markDirty(s.index.DeletePod(namespace, name), key)
}

// UpsertNamespace records a namespace's labels and returns the names of the
// groups to sync.
func (s *State) UpsertNamespace(ns *corev1.Namespace) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markNamespaceDirty(ns.Name, s.index.SetNamespace(ns.Name, ns.Labels))
}

// DeleteNamespace forgets a namespace and returns the names of the groups
// to sync.
func (s *State) DeleteNamespace(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markNamespaceDirty(name, s.index.DeleteNamespace(name))
}

func (s *State) markDirty(groups []string, podKey string) []string {
	for _, name := range groups {
		g := s.groups[name]
		if g.dirty == nil {
			g.dirty = map[string]struct{}{}
		}
		g.dirty[podKey] = struct{}{}
	}
	return groups
}

// markNamespaceDirty marks every pod of the namespace dirty in the groups
// whose selection of the namespace changed.
func (s *State) markNamespaceDirty(namespace string, groups []string) []string {
	for _, name := range groups {
		g := s.groups[name]
		s.index.NamespacePods(namespace, func(podKey string, _ *controlplane.GroupMember) {
			if g.dirty == nil {
				g.dirty = map[string]struct{}{}
			}
			g.dirty[podKey] = struct{}{}
		})
		// Members no longer in the index were marked by their deletion.
	}
	return groups
}

// SyncGroup re-evaluates the dirty pods of a group and publishes the
// change. Syncing a deleted group does nothing.
func (s *State) SyncGroup(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g, ok := s.groups[name]; ok {
		s.syncGroup(g)
	}
}

func (s *State) syncGroup(g *group) {
	if len(g.dirty) == 0 {
		return
	}
	var added, removed []*controlplane.GroupMember
	for podKey := range g.dirty {
		want, ok := s.index.Pod(podKey)
		if !ok || !s.index.Selects(g.name, podKey) {
			want = nil
		}
		cur := g.members[podKey]
		if cur == want {
			continue
		}
		if cur != nil {
			removed = append(removed, cur)
			delete(g.members, podKey)
		}
		if want != nil {
			added = append(added, want)
			g.members[podKey] = want
		}
	}
	g.dirty = nil
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	if g.appliedToRefs > 0 {
		s.publisher.UpdateGroup(controlplane.KindAppliedToGroup, g.name, added, removed)
	}
	if g.addrRefs > 0 {
		s.publisher.UpdateGroup(controlplane.KindAddressGroup, g.name, added, removed)
	}
}

// SyncPolicy brings the policy key ("namespace/name") to np, its current
// version (nil once deleted). An invalid policy is removed from the model
// and its error returned (retrying does not help).
func (s *State) SyncPolicy(key string, np *networkingv1.NetworkPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.policies[key]
	delete(s.errors, key)
	if np == nil {
		s.deletePolicy(key, old)
		return nil
	}
	c, err := convert(np)
	if err != nil {
		err = fmt.Errorf("NetworkPolicy %s: %w", key, err)
		s.errors[key] = err
		s.deletePolicy(key, old)
		return err
	}
	ps := &policyState{policy: c.policy, appliedTo: c.appliedTo.name()}
	portGroups := namedPortPeers(c.policy)
	s.acquire(c.appliedTo, controlplane.KindAppliedToGroup, false)
	for _, g := range c.addressGroups {
		s.acquire(g, controlplane.KindAddressGroup, len(portGroups) > 0 && slices.Contains(portGroups, g.name()))
		ps.addressGroups = append(ps.addressGroups, g.name())
	}
	if old == nil || !reflect.DeepEqual(old.policy, ps.policy) {
		s.publisher.UpdatePolicy(ps.policy)
		if old != nil && old.policy.Name != ps.policy.Name {
			// Recreated with a new UID: the new version is in place first.
			s.publisher.DeletePolicy(old.policy.Name)
		}
	}
	s.policies[key] = ps
	if old != nil {
		s.release(old)
	}
	return nil
}

func (s *State) deletePolicy(key string, old *policyState) {
	if old == nil {
		return
	}
	delete(s.policies, key)
	s.publisher.DeletePolicy(old.policy.Name)
	s.release(old)
}

// acquire takes a reference on the group of sel as kind, creating the
// group with its complete membership if needed, and publishes the group
// when it becomes of that kind. ports takes a reference on the
// AddressGroup's ports too: the publisher learns that the group's members
// must be sent with their ports before the policy that needs them.
func (s *State) acquire(sel groupSelector, kind controlplane.Kind, ports bool) {
	name := sel.name()
	g, ok := s.groups[name]
	if !ok {
		g = &group{name: name, members: map[string]*controlplane.GroupMember{}}
		s.groups[name] = g
		s.index.AddSelector(name, sel.selector())
		s.index.Selected(name, func(podKey string, m *controlplane.GroupMember) {
			if m != nil {
				g.members[podKey] = m
			}
		})
	} else {
		// Publish the group as it is now before another kind of it.
		s.syncGroup(g)
	}
	if ports {
		g.portRefs++
		if g.portRefs == 1 {
			s.publisher.SetAddressGroupPorts(name, true)
		}
	}
	refs := &g.addrRefs
	if kind == controlplane.KindAppliedToGroup {
		refs = &g.appliedToRefs
	}
	*refs++
	if *refs == 1 {
		members := make([]*controlplane.GroupMember, 0, len(g.members))
		for _, m := range g.members {
			members = append(members, m)
		}
		s.publisher.UpdateGroup(kind, name, members, nil)
	}
}

// release drops the references of a policy's old version, deleting the
// groups (or kinds of groups) no policy uses any more.
func (s *State) release(ps *policyState) {
	for _, name := range namedPortPeers(ps.policy) {
		g := s.groups[name]
		g.portRefs--
		if g.portRefs == 0 {
			s.publisher.SetAddressGroupPorts(name, false)
		}
	}
	s.unref(ps.appliedTo, controlplane.KindAppliedToGroup)
	for _, name := range ps.addressGroups {
		s.unref(name, controlplane.KindAddressGroup)
	}
}

func (s *State) unref(name string, kind controlplane.Kind) {
	g := s.groups[name]
	refs := &g.addrRefs
	if kind == controlplane.KindAppliedToGroup {
		refs = &g.appliedToRefs
	}
	*refs--
	if *refs == 0 {
		s.publisher.DeleteGroup(kind, name)
	}
	if g.appliedToRefs == 0 && g.addrRefs == 0 {
		s.index.DeleteSelector(name)
		delete(s.groups, name)
	}
}

// Model returns a snapshot of the model as published so far (pending group
// syncs not included), in the form Compute returns.
func (s *State) Model() *Model {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := &Model{
		Policies:        map[string]*controlplane.NetworkPolicy{},
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		Errors:          map[string]error{},
	}
	for _, ps := range s.policies {
		m.Policies[ps.policy.Name] = ps.policy
	}
	for name, g := range s.groups {
		members := make([]controlplane.GroupMember, 0, len(g.members))
		for _, mem := range g.members {
			members = append(members, *mem)
		}
		slices.SortFunc(members, func(a, b controlplane.GroupMember) int { return cmp.Compare(a.Key(), b.Key()) })
		if g.appliedToRefs > 0 {
			m.AppliedToGroups[name] = &controlplane.AppliedToGroup{Name: name, Members: members}
		}
		if g.addrRefs > 0 {
			m.AddressGroups[name] = &controlplane.AddressGroup{Name: name, Members: members}
		}
	}
	for k, err := range s.errors {
		m.Errors[k] = err
	}
	return m
}

// StateStats counts the model's entries.
type StateStats struct {
	Policies, Groups int
	Index            grouping.Stats
}

// Stats returns the model's size.
func (s *State) Stats() StateStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StateStats{Policies: len(s.policies), Groups: len(s.groups), Index: s.index.Stats()}
}

// equalMembers says whether two member values (nil: not a member) are
// equal.
func equalMembers(a, b *controlplane.GroupMember) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Pod == b.Pod && a.Node == b.Node && slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports)
}

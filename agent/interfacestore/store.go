package interfacestore

import (
	"slices"
	"strings"
	"sync"
)

// Store holds the pod interfaces of this node, indexed by container ID, by
// pod and by host interface name. A container has at most one interface.
// It is safe for concurrent use; it hands out copies.
type Store struct {
	mu          sync.RWMutex
	byContainer map[string]PodInterface
	byHostIf    map[string]string          // host interface name -> container ID
	byPod       map[string]map[string]bool // pod key -> container IDs
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{
		byContainer: map[string]PodInterface{},
		byHostIf:    map[string]string{},
		byPod:       map[string]map[string]bool{},
	}
}

// Add records p, replacing the interface recorded for the same container ID.
func (s *Store) Add(p PodInterface) {
	p = clone(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(p.ContainerID)
	s.byContainer[p.ContainerID] = p
	s.byHostIf[p.HostIfName] = p.ContainerID
	key := p.PodKey()
	if s.byPod[key] == nil {
		s.byPod[key] = map[string]bool{}
	}
	s.byPod[key][p.ContainerID] = true
}

// Delete forgets the interface of containerID; a missing one is a no-op.
func (s *Store) Delete(containerID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(containerID)
}

func (s *Store) deleteLocked(containerID string) {
	p, ok := s.byContainer[containerID]
	if !ok {
		return
	}
	delete(s.byContainer, containerID)
	if s.byHostIf[p.HostIfName] == containerID {
		delete(s.byHostIf, p.HostIfName)
	}
	key := p.PodKey()
	delete(s.byPod[key], containerID)
	if len(s.byPod[key]) == 0 {
		delete(s.byPod, key)
	}
}

// GetByContainerID returns the interface of a container (pod sandbox).
func (s *Store) GetByContainerID(containerID string) (PodInterface, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.byContainer[containerID]
	return clone(p), ok
}

// GetByHostIfName returns the interface whose host veth end (OVS port) has
// the given name.
func (s *Store) GetByHostIfName(name string) (PodInterface, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.byHostIf[name]
	if !ok {
		return PodInterface{}, false
	}
	return clone(s.byContainer[id]), true
}

// GetByPod returns the interfaces of a pod, sorted by container ID. A pod
// normally has one; it can briefly have two while its sandbox is recreated.
func (s *Store) GetByPod(namespace, name string) []PodInterface {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := s.byPod[PodInterface{PodNamespace: namespace, PodName: name}.PodKey()]
	out := make([]PodInterface, 0, len(ids))
	for id := range ids {
		out = append(out, clone(s.byContainer[id]))
	}
	sortByContainerID(out)
	return out
}

// List returns every interface, sorted by container ID.
func (s *Store) List() []PodInterface {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]PodInterface, 0, len(s.byContainer))
	for _, p := range s.byContainer {
		out = append(out, clone(p))
	}
	sortByContainerID(out)
	return out
}

// Len returns the number of interfaces.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byContainer)
}

func sortByContainerID(ps []PodInterface) {
	slices.SortFunc(ps, func(a, b PodInterface) int { return strings.Compare(a.ContainerID, b.ContainerID) })
}

// clone copies p so callers cannot change the store's MAC slice.
func clone(p PodInterface) PodInterface {
	p.MAC = slices.Clone(p.MAC)
	return p
}

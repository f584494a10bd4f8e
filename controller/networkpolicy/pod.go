package networkpolicy

import (
	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/grouping"
)

// Pod returns a copy of the pod namespace/name as a group member, nil if
// the pod cannot be a member (no node yet, finished, host network), and
// whether the model knows the pod at all.
func (s *State) Pod(namespace, name string) (*controlplane.GroupMember, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.index.Pod(grouping.PodKey(namespace, name))
	if !ok || m == nil {
		return nil, ok
	}
	c := m.DeepCopy()
	return &c, true
}

package apiserver

// StoreStats counts what the store serves.
type StoreStats struct {
	// Policies are the NetworkPolicies in the store.
	Policies int
	// AppliedToGroups and AddressGroups are the groups published.
	AppliedToGroups, AddressGroups int
	// ConnectedNodes are the nodes with at least one open watch;
	// Watchers counts the watches (an agent that reconnects may briefly
	// have two).
	ConnectedNodes, Watchers int
}

// Stats returns the store's counts; it only reads.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := StoreStats{Policies: len(s.policies)}
	for _, a := range s.atgs {
		if a.published {
			st.AppliedToGroups++
		}
	}
	for _, a := range s.ags {
		if a.published {
			st.AddressGroups++
		}
	}
	for _, n := range s.nodes {
		if len(n.watchers) > 0 {
			st.ConnectedNodes++
			st.Watchers += len(n.watchers)
		}
	}
	return st
}

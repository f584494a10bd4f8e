package controlplane

// Deep copies, so that holders of a NodeState (the controller's watch store,
// the agent's cache) can hand out objects without sharing memory.

// DeepCopy returns a copy of m that shares no memory with m.
func (m GroupMember) DeepCopy() GroupMember {
	out := m
	out.IPs = cloneSlice(m.IPs)
	out.Ports = cloneSlice(m.Ports)
	return out
}

func copyMembers(in []GroupMember) []GroupMember {
	if in == nil {
		return nil
	}
	out := make([]GroupMember, len(in))
	for i := range in {
		out[i] = in[i].DeepCopy()
	}
	return out
}

// DeepCopy returns a copy of g that shares no memory with g.
func (g *AppliedToGroup) DeepCopy() *AppliedToGroup {
	if g == nil {
		return nil
	}
	return &AppliedToGroup{Name: g.Name, Members: copyMembers(g.Members)}
}

// DeepCopy returns a copy of g that shares no memory with g.
func (g *AddressGroup) DeepCopy() *AddressGroup {
	if g == nil {
		return nil
	}
	return &AddressGroup{Name: g.Name, Members: copyMembers(g.Members)}
}

// DeepCopy returns a copy of p that shares no memory with p.
func (p Peer) DeepCopy() Peer {
	out := Peer{AddressGroups: cloneSlice(p.AddressGroups)}
	if p.IPBlocks != nil {
		out.IPBlocks = make([]IPBlock, len(p.IPBlocks))
		for i, b := range p.IPBlocks {
			out.IPBlocks[i] = IPBlock{CIDR: b.CIDR, Except: cloneSlice(b.Except)}
		}
	}
	return out
}

// DeepCopy returns a copy of np that shares no memory with np.
func (np *NetworkPolicy) DeepCopy() *NetworkPolicy {
	if np == nil {
		return nil
	}
	out := *np
	out.AppliedToGroups = cloneSlice(np.AppliedToGroups)
	out.PolicyTypes = cloneSlice(np.PolicyTypes)
	if np.Rules != nil {
		out.Rules = make([]Rule, len(np.Rules))
		for i, r := range np.Rules {
			out.Rules[i] = Rule{
				Direction: r.Direction,
				From:      r.From.DeepCopy(),
				To:        r.To.DeepCopy(),
				Services:  cloneSlice(r.Services),
			}
		}
	}
	return &out
}

// DeepCopy returns a copy of s that shares no memory with s. The maps of the
// copy are never nil.
func (s *NodeState) DeepCopy() *NodeState {
	out := NewNodeState()
	if s == nil {
		return out
	}
	for k, v := range s.Policies {
		out.Policies[k] = v.DeepCopy()
	}
	for k, v := range s.AppliedToGroups {
		out.AppliedToGroups[k] = v.DeepCopy()
	}
	for k, v := range s.AddressGroups {
		out.AddressGroups[k] = v.DeepCopy()
	}
	return out
}

func cloneSlice[T any](in []T) []T {
	if in == nil {
		return nil
	}
	return append(make([]T, 0, len(in)), in...)
}

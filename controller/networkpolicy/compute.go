// Package networkpolicy turns Kubernetes NetworkPolicies into Palisade's
// internal model (controlplane policies, AppliedToGroups and AddressGroups)
// and keeps that model current with a controller over shared informers.
//
// Compute is the reference: a pure full recomputation over plain API
// objects. State maintains the same model incrementally (pods indexed by
// label set, groups updated member by member) and hands every change to a
// Publisher; the Controller feeds State from informers through workqueues.
// Tests replay event sequences through State and compare it with Compute.
package networkpolicy

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Inputs are the API objects the model is computed from.
type Inputs struct {
	Pods            []*corev1.Pod
	Namespaces      []*corev1.Namespace
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// Model is the complete internal model: every policy, and every group with its
// full membership. It is immutable once computed: callers must not modify it
// or anything it returns.
type Model struct {
	Policies        map[string]*controlplane.NetworkPolicy
	AppliedToGroups map[string]*controlplane.AppliedToGroup
	AddressGroups   map[string]*controlplane.AddressGroup
	// Errors holds, by "namespace/name", the policies that were skipped
	// because they are invalid.
	Errors map[string]error
}

// Compute builds the model from in. It never fails as a whole: an invalid
// policy is left out and its error is recorded in Model.Errors.
func Compute(in Inputs) *Model {
	m := &Model{
		Policies:        map[string]*controlplane.NetworkPolicy{},
		AppliedToGroups: map[string]*controlplane.AppliedToGroup{},
		AddressGroups:   map[string]*controlplane.AddressGroup{},
		Errors:          map[string]error{},
	}
	idx := newMemberIndex(in.Pods, in.Namespaces)
	for _, np := range in.NetworkPolicies {
		if np == nil {
			continue
		}
		key := np.Namespace + "/" + np.Name
		c, err := convert(np)
		if err != nil {
			m.Errors[key] = fmt.Errorf("NetworkPolicy %s: %w", key, err)
			continue
		}
		if name := c.appliedTo.name(); m.AppliedToGroups[name] == nil {
			m.AppliedToGroups[name] = &controlplane.AppliedToGroup{Name: name, Members: idx.members(c.appliedTo)}
		}
		for _, g := range c.addressGroups {
			if name := g.name(); m.AddressGroups[name] == nil {
				m.AddressGroups[name] = &controlplane.AddressGroup{Name: name, Members: idx.members(g)}
			}
		}
		m.Policies[c.policy.Name] = c.policy
	}
	return m
}

// memberIndex holds the pods that can be group members, with their
// namespaces' labels.
type memberIndex struct {
	pods            []*corev1.Pod
	namespaceLabels map[string]labels.Set
}

func newMemberIndex(pods []*corev1.Pod, namespaces []*corev1.Namespace) *memberIndex {
	idx := &memberIndex{namespaceLabels: map[string]labels.Set{}}
	for _, ns := range namespaces {
		if ns != nil {
			idx.namespaceLabels[ns.Name] = labels.Set(ns.Labels)
		}
	}
	for _, p := range pods {
		if isMember(p) {
			idx.pods = append(idx.pods, p)
		}
	}
	// Members are sorted by their Key, "namespace/name", as everywhere.
	sort.Slice(idx.pods, func(i, j int) bool {
		a, b := idx.pods[i], idx.pods[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return idx
}

// members returns the members selected by g, sorted by pod.
func (idx *memberIndex) members(g groupSelector) []controlplane.GroupMember {
	out := []controlplane.GroupMember{}
	for _, p := range idx.pods {
		if g.NamespaceSelector == nil {
			if p.Namespace != g.Namespace {
				continue
			}
		} else if !g.NamespaceSelector.Matches(idx.namespaceLabels[p.Namespace]) {
			continue
		}
		if !g.PodSelector.Matches(labels.Set(p.Labels)) {
			continue
		}
		out = append(out, memberOf(p))
	}
	return out
}

// NodeState returns node's span of the model: the policies whose
// AppliedToGroups have a member on node, those groups restricted to node's
// members, and the AddressGroups the policies' rules refer to (all members,
// as peers: see GroupMember.AsPeer; with their ports if some policy of the
// model needs them, see namedPortPeers). The result shares policies with
// the model: treat it as read-only.
func (m *Model) NodeState(node string) *controlplane.NodeState {
	s := controlplane.NewNodeState()
	withPorts := map[string]bool{}
	for _, p := range m.Policies {
		for _, g := range namedPortPeers(p) {
			withPorts[g] = true
		}
	}
	local := map[string]*controlplane.AppliedToGroup{}
	for name, g := range m.AppliedToGroups {
		var members []controlplane.GroupMember
		for _, mem := range g.Members {
			if mem.Node == node {
				members = append(members, mem)
			}
		}
		if len(members) > 0 {
			local[name] = &controlplane.AppliedToGroup{Name: name, Members: members}
		}
	}
	for name, p := range m.Policies {
		inSpan := false
		for _, g := range p.AppliedToGroups {
			if lg, ok := local[g]; ok {
				inSpan = true
				s.AppliedToGroups[g] = lg
			}
		}
		if !inSpan {
			continue
		}
		s.Policies[name] = p
		for _, r := range p.Rules {
			for _, peer := range []controlplane.Peer{r.From, r.To} {
				for _, g := range peer.AddressGroups {
					if ag, ok := m.AddressGroups[g]; ok && s.AddressGroups[g] == nil {
						peers := make([]controlplane.GroupMember, len(ag.Members))
						for i, mem := range ag.Members {
							peers[i] = mem.AsPeer(withPorts[g])
						}
						s.AddressGroups[g] = &controlplane.AddressGroup{Name: g, Members: peers}
					}
				}
			}
		}
	}
	return s
}

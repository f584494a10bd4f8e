// Package networkpolicy turns Kubernetes NetworkPolicies into Palisade's
// internal model (controlplane policies, AppliedToGroups and AddressGroups)
// and keeps that model current with a controller over shared informers.
//
// Compute is a pure function over plain API objects; the controller only
// gathers its inputs from listers and publishes its result.
package networkpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// SourceTypeK8sNetworkPolicy is the NetworkPolicyReference.Type of policies
// computed from networking/v1 NetworkPolicies.
const SourceTypeK8sNetworkPolicy = "K8sNetworkPolicy"

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
		p, err := m.addPolicy(np, idx)
		if err != nil {
			m.Errors[key] = fmt.Errorf("NetworkPolicy %s: %w", key, err)
			continue
		}
		m.Policies[p.Name] = p
	}
	return m
}

// groupSelector is the normalized selector of a group: pods in Namespace (when
// NamespaceSelector is nil) or in every namespace matching NamespaceSelector,
// that match PodSelector.
type groupSelector struct {
	Namespace         string
	PodSelector       labels.Selector
	NamespaceSelector labels.Selector
}

// canonicalSelector renders a selector with its requirements sorted, so that
// equal selectors written differently get the same text.
func canonicalSelector(s labels.Selector) string {
	reqs, _ := s.Requirements()
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = r.String()
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// key is the canonical text of the selector.
func (g groupSelector) key() string {
	scope := "namespace=" + g.Namespace
	if g.NamespaceSelector != nil {
		scope = "namespaceSelector=" + canonicalSelector(g.NamespaceSelector)
	}
	return scope + "|podSelector=" + canonicalSelector(g.PodSelector)
}

// name is the group's name: a short hash of its canonical selector.
func (g groupSelector) name() string {
	sum := sha256.Sum256([]byte(g.key()))
	return hex.EncodeToString(sum[:8])
}

// addPolicy converts np, adding the groups it refers to to m.
func (m *Model) addPolicy(np *networkingv1.NetworkPolicy, idx *memberIndex) (*controlplane.NetworkPolicy, error) {
	podSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("invalid podSelector: %w", err)
	}
	policyTypes := effectivePolicyTypes(np)
	var rules []controlplane.Rule
	// Convert all rules before adding any group, so an invalid policy leaves
	// no trace in the model.
	var addressGroups []groupSelector
	for _, pt := range policyTypes {
		switch pt {
		case string(networkingv1.PolicyTypeIngress):
			for i, r := range np.Spec.Ingress {
				peer, groups, err := convertPeers(np.Namespace, r.From)
				if err != nil {
					return nil, fmt.Errorf("ingress rule %d: %w", i, err)
				}
				services, err := convertPorts(r.Ports)
				if err != nil {
					return nil, fmt.Errorf("ingress rule %d: %w", i, err)
				}
				rules = append(rules, controlplane.Rule{Direction: controlplane.DirectionIn, From: peer, Services: services})
				addressGroups = append(addressGroups, groups...)
			}
		case string(networkingv1.PolicyTypeEgress):
			for i, r := range np.Spec.Egress {
				peer, groups, err := convertPeers(np.Namespace, r.To)
				if err != nil {
					return nil, fmt.Errorf("egress rule %d: %w", i, err)
				}
				services, err := convertPorts(r.Ports)
				if err != nil {
					return nil, fmt.Errorf("egress rule %d: %w", i, err)
				}
				rules = append(rules, controlplane.Rule{Direction: controlplane.DirectionOut, To: peer, Services: services})
				addressGroups = append(addressGroups, groups...)
			}
		default:
			return nil, fmt.Errorf("unknown policyType %q", pt)
		}
	}

	applied := groupSelector{Namespace: np.Namespace, PodSelector: podSel}
	atgName := applied.name()
	if _, ok := m.AppliedToGroups[atgName]; !ok {
		m.AppliedToGroups[atgName] = &controlplane.AppliedToGroup{Name: atgName, Members: idx.members(applied)}
	}
	for _, g := range addressGroups {
		name := g.name()
		if _, ok := m.AddressGroups[name]; !ok {
			m.AddressGroups[name] = &controlplane.AddressGroup{Name: name, Members: idx.members(g)}
		}
	}

	name := string(np.UID)
	if name == "" {
		name = np.Namespace + "/" + np.Name
	}
	return &controlplane.NetworkPolicy{
		Name: name,
		SourceRef: controlplane.NetworkPolicyReference{
			Type:      SourceTypeK8sNetworkPolicy,
			Namespace: np.Namespace,
			Name:      np.Name,
			UID:       string(np.UID),
		},
		Rules:           rules,
		AppliedToGroups: []string{atgName},
		PolicyTypes:     policyTypes,
	}, nil
}

// effectivePolicyTypes returns the stored policyTypes, or when none are
// stored, what the apiserver would have defaulted: Ingress always, Egress if
// the policy has egress rules.
func effectivePolicyTypes(np *networkingv1.NetworkPolicy) []string {
	if len(np.Spec.PolicyTypes) > 0 {
		out := make([]string, len(np.Spec.PolicyTypes))
		for i, pt := range np.Spec.PolicyTypes {
			out[i] = string(pt)
		}
		return out
	}
	out := []string{string(networkingv1.PolicyTypeIngress)}
	if len(np.Spec.Egress) > 0 {
		out = append(out, string(networkingv1.PolicyTypeEgress))
	}
	return out
}

// convertPeers converts the peers of one rule. No peers means all addresses
// (an empty Peer). It returns the selectors of the address groups used.
func convertPeers(namespace string, peers []networkingv1.NetworkPolicyPeer) (controlplane.Peer, []groupSelector, error) {
	var out controlplane.Peer
	var groups []groupSelector
	seen := map[string]bool{}
	for i, p := range peers {
		if p.IPBlock != nil {
			if p.PodSelector != nil || p.NamespaceSelector != nil {
				return out, nil, fmt.Errorf("peer %d: ipBlock cannot be combined with a selector", i)
			}
			out.IPBlocks = append(out.IPBlocks, controlplane.IPBlock{
				CIDR:   p.IPBlock.CIDR,
				Except: append([]string(nil), p.IPBlock.Except...),
			})
			continue
		}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			return out, nil, fmt.Errorf("peer %d: one of podSelector, namespaceSelector or ipBlock is required", i)
		}
		g := groupSelector{Namespace: namespace, PodSelector: labels.Everything()}
		if p.PodSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
			if err != nil {
				return out, nil, fmt.Errorf("peer %d: invalid podSelector: %w", i, err)
			}
			g.PodSelector = sel
		}
		if p.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
			if err != nil {
				return out, nil, fmt.Errorf("peer %d: invalid namespaceSelector: %w", i, err)
			}
			g.Namespace = ""
			g.NamespaceSelector = sel
		}
		name := g.name()
		if seen[name] {
			continue
		}
		seen[name] = true
		out.AddressGroups = append(out.AddressGroups, name)
		groups = append(groups, g)
	}
	return out, groups, nil
}

// convertPorts converts the ports of one rule. No ports means all services.
func convertPorts(ports []networkingv1.NetworkPolicyPort) ([]controlplane.Service, error) {
	var out []controlplane.Service
	for i, p := range ports {
		s := controlplane.Service{Protocol: controlplane.ProtocolTCP}
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
				s.Protocol = controlplane.Protocol(*p.Protocol)
			default:
				return nil, fmt.Errorf("port %d: unsupported protocol %q", i, *p.Protocol)
			}
		}
		if p.Port != nil {
			if p.Port.Type == intstr.Int {
				if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
					return nil, fmt.Errorf("port %d: port %d out of range 1-65535", i, p.Port.IntVal)
				}
				s.Port = strconv.Itoa(int(p.Port.IntVal))
			} else {
				if p.Port.StrVal == "" {
					return nil, fmt.Errorf("port %d: empty named port", i)
				}
				s.Port = p.Port.StrVal
			}
		}
		if p.EndPort != nil {
			if p.Port == nil || p.Port.Type != intstr.Int {
				return nil, fmt.Errorf("port %d: endPort requires a numeric port", i)
			}
			if *p.EndPort < p.Port.IntVal || *p.EndPort > 65535 {
				return nil, fmt.Errorf("port %d: endPort %d must be between port %d and 65535", i, *p.EndPort, p.Port.IntVal)
			}
			s.EndPort = *p.EndPort
		}
		out = append(out, s)
	}
	return out, nil
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
	sort.Slice(idx.pods, func(i, j int) bool {
		a, b := idx.pods[i], idx.pods[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return idx
}

// isMember says whether a pod can be a group member: it has an IP and a node,
// uses the pod network and has not terminated.
func isMember(p *corev1.Pod) bool {
	if p == nil || p.Spec.HostNetwork || p.Spec.NodeName == "" {
		return false
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	return len(podIPs(p)) > 0
}

func podIPs(p *corev1.Pod) []string {
	var ips []string
	for _, ip := range p.Status.PodIPs {
		if ip.IP != "" {
			ips = append(ips, ip.IP)
		}
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []string{p.Status.PodIP}
	}
	return ips
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

func memberOf(p *corev1.Pod) controlplane.GroupMember {
	m := controlplane.GroupMember{
		Pod:  controlplane.PodReference{Namespace: p.Namespace, Name: p.Name},
		IPs:  podIPs(p),
		Node: p.Spec.NodeName,
	}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "" {
				continue
			}
			proto := controlplane.ProtocolTCP
			if port.Protocol != "" {
				proto = controlplane.Protocol(port.Protocol)
			}
			m.Ports = append(m.Ports, controlplane.NamedPort{Name: port.Name, Port: port.ContainerPort, Protocol: proto})
		}
	}
	return m
}

// NodeState returns node's span of the model: the policies whose
// AppliedToGroups have a member on node, those groups restricted to node's
// members, and the AddressGroups the policies' rules refer to (all members).
// The result shares policies and AddressGroups with the model: treat it as
// read-only.
func (m *Model) NodeState(node string) *controlplane.NodeState {
	s := controlplane.NewNodeState()
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
					if ag, ok := m.AddressGroups[g]; ok {
						s.AddressGroups[g] = ag
					}
				}
			}
		}
	}
	return s
}

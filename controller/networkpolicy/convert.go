package networkpolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/grouping"
)

// SourceTypeK8sNetworkPolicy is the NetworkPolicyReference.Type of policies
// computed from networking/v1 NetworkPolicies.
const SourceTypeK8sNetworkPolicy = "K8sNetworkPolicy"

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

// converted is a NetworkPolicy in internal form with the selectors of the
// groups it refers to.
type converted struct {
	policy        *controlplane.NetworkPolicy
	appliedTo     groupSelector
	addressGroups []groupSelector // distinct
}

// convert converts np. It fails, leaving no partial result, if np is
// invalid.
func convert(np *networkingv1.NetworkPolicy) (*converted, error) {
	podSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("invalid podSelector: %w", err)
	}
	policyTypes := effectivePolicyTypes(np)
	var rules []controlplane.Rule
	var addressGroups []groupSelector
	seen := map[string]bool{}
	addGroups := func(groups []groupSelector) {
		for _, g := range groups {
			if name := g.name(); !seen[name] {
				seen[name] = true
				addressGroups = append(addressGroups, g)
			}
		}
	}
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
				addGroups(groups)
			}
		case string(networkingv1.PolicyTypeEgress):
			for i, r := range np.Spec.Egress {
				to := r.To
				services, err := convertPorts(r.Ports)
				if err != nil {
					return nil, fmt.Errorf("egress rule %d: %w", i, err)
				}
				if len(to) == 0 && slices.ContainsFunc(services, isNamedPort) {
					// A named port is resolved on the destination pod, so
					// "to every destination" needs every pod's ports: the
					// rule's peers become all pods (named and numeric ports)
					// plus every address (numeric ports only).
					to = []networkingv1.NetworkPolicyPeer{
						{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{}},
						{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}},
					}
				}
				peer, groups, err := convertPeers(np.Namespace, to)
				if err != nil {
					return nil, fmt.Errorf("egress rule %d: %w", i, err)
				}
				rules = append(rules, controlplane.Rule{Direction: controlplane.DirectionOut, To: peer, Services: services})
				addGroups(groups)
			}
		default:
			return nil, fmt.Errorf("unknown policyType %q", pt)
		}
	}
	applied := groupSelector{Namespace: np.Namespace, PodSelector: podSel}
	return &converted{
		policy: &controlplane.NetworkPolicy{
			Name: internalName(np),
			SourceRef: controlplane.NetworkPolicyReference{
				Type:      SourceTypeK8sNetworkPolicy,
				Namespace: np.Namespace,
				Name:      np.Name,
				UID:       string(np.UID),
			},
			Rules:           rules,
			AppliedToGroups: []string{applied.name()},
			PolicyTypes:     policyTypes,
		},
		appliedTo:     applied,
		addressGroups: addressGroups,
	}, nil
}

// internalName is the name of np's internal policy: its UID, or
// "namespace/name" for objects without one (tests, dry runs).
func internalName(np *networkingv1.NetworkPolicy) string {
	if np.UID != "" {
		return string(np.UID)
	}
	return np.Namespace + "/" + np.Name
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
			if err := validateIPBlock(p.IPBlock); err != nil {
				return out, nil, fmt.Errorf("peer %d: %w", i, err)
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

// validateIPBlock checks that the CIDR and its exceptions parse and that
// every exception lies within the CIDR.
func validateIPBlock(b *networkingv1.IPBlock) error {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return fmt.Errorf("ipBlock: invalid cidr %q", b.CIDR)
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			return fmt.Errorf("ipBlock: invalid except %q", e)
		}
		if ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() < cidr.Bits() || !cidr.Contains(ex.Addr()) {
			return fmt.Errorf("ipBlock: except %q is not within cidr %q", e, b.CIDR)
		}
	}
	return nil
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

// isMember says whether a pod can be a group member: it is scheduled to a
// node, uses the pod network and has not terminated. A pod is a member
// before it has an IP: its node must know it is isolated before its
// interface comes up, or its first packets would pass. Until it has an IP
// it contributes no address to the rules that use it as a peer.
func isMember(p *corev1.Pod) bool {
	if p == nil || p.Spec.HostNetwork || p.Spec.NodeName == "" {
		return false
	}
	return p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
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

// namedPortPeers returns the distinct AddressGroups that are peers of p's
// egress rules with a named port: agents resolve those named ports on the
// peers, so those groups' members must carry their ports.
func namedPortPeers(p *controlplane.NetworkPolicy) []string {
	var out []string
	for _, r := range p.Rules {
		if r.Direction != controlplane.DirectionOut || !slices.ContainsFunc(r.Services, isNamedPort) {
			continue
		}
		for _, g := range r.To.AddressGroups {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	return out
}

// isNamedPort says whether s's port is a name rather than a number.
func isNamedPort(s controlplane.Service) bool {
	if s.Port == "" {
		return false
	}
	_, err := strconv.Atoi(s.Port)
	return err != nil
}

// selector is g as a grouping index selector.
func (g groupSelector) selector() grouping.Selector {
	return grouping.Selector{Namespace: g.Namespace, NamespaceSelector: g.NamespaceSelector, PodSelector: g.PodSelector}
}

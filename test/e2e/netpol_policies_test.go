//go:build e2e

package e2e

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Builders of NetworkPolicies for the cases: small enough that a case reads
// like the policy it creates.

type npOption func(*networkingv1.NetworkPolicySpec)

// npPolicy returns a policy selecting podSelector in ns.
func npPolicy(ns, name string, podSelector metav1.LabelSelector, opts ...npOption) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: podSelector},
	}
	for _, o := range opts {
		o(&p.Spec)
	}
	return p
}

// npIngress makes the policy an ingress policy with these rules (none: deny
// all ingress).
func npIngress(rules ...networkingv1.NetworkPolicyIngressRule) npOption {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = append([]networkingv1.NetworkPolicyIngressRule{}, rules...)
		s.PolicyTypes = append(s.PolicyTypes, networkingv1.PolicyTypeIngress)
	}
}

// npEgress makes the policy an egress policy with these rules (none: deny
// all egress).
func npEgress(rules ...networkingv1.NetworkPolicyEgressRule) npOption {
	return func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = append([]networkingv1.NetworkPolicyEgressRule{}, rules...)
		s.PolicyTypes = append(s.PolicyTypes, networkingv1.PolicyTypeEgress)
	}
}

// npFrom is an ingress rule.
func npFrom(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports}
}

// npTo is an egress rule.
func npTo(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyEgressRule {
	return networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports}
}

// npPeers lists rule peers (nil: every peer).
func npPeers(p ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return p }

// npLabels is a matchLabels selector from key, value pairs.
func npLabels(kv ...string) metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return metav1.LabelSelector{MatchLabels: m}
}

// npAll is the empty selector.
func npAll() metav1.LabelSelector { return metav1.LabelSelector{} }

// npExpr is a one-requirement matchExpressions selector.
func npExpr(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func npPod(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &s}
}

func npNs(s metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &s}
}

func npPodNs(pod, ns metav1.LabelSelector) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &pod, NamespaceSelector: &ns}
}

func npCIDR(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// npPort is a numeric port of proto.
func npPort(proto corev1.Protocol, n int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

// npPortNoProto is a numeric port without a protocol (TCP by default).
func npPortNoProto(n int32) networkingv1.NetworkPolicyPort {
	p := intstr.FromInt32(n)
	return networkingv1.NetworkPolicyPort{Port: &p}
}

// npPortRange is ports n..end of proto.
func npPortRange(proto corev1.Protocol, n, end int32) networkingv1.NetworkPolicyPort {
	p := npPort(proto, n)
	p.EndPort = &end
	return p
}

// npNamedPort is a container port name, optionally with a protocol.
func npNamedPort(name string, proto ...corev1.Protocol) networkingv1.NetworkPolicyPort {
	p := intstr.FromString(name)
	np := networkingv1.NetworkPolicyPort{Port: &p}
	if len(proto) > 0 {
		np.Protocol = &proto[0]
	}
	return np
}

// npProtocol is every port of proto.
func npProtocol(proto corev1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: &proto}
}

// Package controlplane defines the objects the controller computes from
// NetworkPolicies and serves to agents: internal policies with rules,
// AppliedToGroups (the pods a policy protects) and AddressGroups (the peers'
// addresses). They travel as JSON over the agent-facing watch API.
//
// Groups are named by their normalized selector, so identical selectors in
// different policies share one group.
package controlplane

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Protocol is an IP protocol name as in the Kubernetes API.
type Protocol string

const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Direction of a rule relative to the pods the policy applies to.
type Direction string

const (
	DirectionIn  Direction = "In"
	DirectionOut Direction = "Out"
)

// PodReference names a pod.
type PodReference struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r PodReference) String() string { return r.Namespace + "/" + r.Name }

// MarshalJSON writes r as the string "namespace/name" (neither can contain
// a "/"): members travel in every group patch, so they are kept short.
func (r PodReference) MarshalJSON() ([]byte, error) {
	return json.Marshal(r.String())
}

// UnmarshalJSON reads "namespace/name", or the object
// {"namespace":...,"name":...} that older agents persisted.
func (r *PodReference) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '{' {
		var obj struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		}
		if err := json.Unmarshal(data, &obj); err != nil {
			return err
		}
		*r = PodReference{Namespace: obj.Namespace, Name: obj.Name}
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("pod reference: %w", err)
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("invalid pod reference %q: want namespace/name", s)
	}
	*r = PodReference{Namespace: ns, Name: name}
	return nil
}

// NamedPort is a container port that has a name, so agents can resolve named
// ports in rules per destination pod.
type NamedPort struct {
	Name     string   `json:"name"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
}

// GroupMember is one pod in a group. In a GroupPatch's Removed list only Pod
// is set (members are identified by pod). AddressGroup members carry no
// Node (agents need only the addresses of peers), and carry Ports only when
// some egress rule with a named port has the group as a peer: named ports
// of peers are resolved only for egress.
type GroupMember struct {
	Pod   PodReference `json:"pod"`
	IPs   []string     `json:"ips,omitempty"`
	Node  string       `json:"node,omitempty"`
	Ports []NamedPort  `json:"ports,omitempty"`
}

// Key identifies a member within a group.
func (m GroupMember) Key() string { return m.Pod.String() }

// AsPeer returns m as an AddressGroup sends it: without Node, and with
// Ports only if withPorts.
func (m GroupMember) AsPeer(withPorts bool) GroupMember {
	p := GroupMember{Pod: m.Pod, IPs: m.IPs}
	if withPorts {
		p.Ports = m.Ports
	}
	return p
}

// AppliedToGroup is a set of pods that policies apply to. An agent receives only
// the members on its own node.
type AppliedToGroup struct {
	Name    string        `json:"name"`
	Members []GroupMember `json:"members"`
}

// AddressGroup is a set of pods whose addresses are peers of rules.
type AddressGroup struct {
	Name    string        `json:"name"`
	Members []GroupMember `json:"members"`
}

// IPBlock is a CIDR with exceptions, kept inline in the rule.
type IPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// Peer is the other side of a rule: the union of its address groups and IP
// blocks. An empty Peer (no groups, no blocks) matches every address.
type Peer struct {
	AddressGroups []string  `json:"addressGroups,omitempty"`
	IPBlocks      []IPBlock `json:"ipBlocks,omitempty"`
}

// Service is a protocol with an optional port or port range. Port is either a
// number (as decimal string) or a named port; empty means all ports.
type Service struct {
	Protocol Protocol `json:"protocol"`
	Port     string   `json:"port,omitempty"`
	EndPort  int32    `json:"endPort,omitempty"`
}

// Rule is one ingress or egress rule of a policy. For DirectionIn, From holds
// the peers; for DirectionOut, To holds them. Empty Services means all
// services.
type Rule struct {
	Direction Direction `json:"direction"`
	From      Peer      `json:"from,omitempty"`
	To        Peer      `json:"to,omitempty"`
	Services  []Service `json:"services,omitempty"`
}

// NetworkPolicyReference names the user-facing object a policy came from.
type NetworkPolicyReference struct {
	Type      string `json:"type"` // "K8sNetworkPolicy"
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// NetworkPolicy is the internal form of a user policy.
type NetworkPolicy struct {
	// Name is unique among internal policies (the source object's UID).
	Name            string                 `json:"name"`
	SourceRef       NetworkPolicyReference `json:"sourceRef"`
	Rules           []Rule                 `json:"rules"`
	AppliedToGroups []string               `json:"appliedToGroups"`
	// PolicyTypes lists the directions the policy isolates ("Ingress",
	// "Egress"), as stored by the apiserver.
	PolicyTypes []string `json:"policyTypes"`
}

// NodeState is everything in one node's span: the policies that apply to pods
// on the node, the node's own members of their AppliedToGroups, and the
// AddressGroups their rules refer to. The controller computes it for every
// node; the agent's cache holds the copy for its node.
type NodeState struct {
	Policies        map[string]*NetworkPolicy  `json:"policies"`
	AppliedToGroups map[string]*AppliedToGroup `json:"appliedToGroups"`
	AddressGroups   map[string]*AddressGroup   `json:"addressGroups"`
}

// NewNodeState returns an empty NodeState.
func NewNodeState() *NodeState {
	return &NodeState{
		Policies:        map[string]*NetworkPolicy{},
		AppliedToGroups: map[string]*AppliedToGroup{},
		AddressGroups:   map[string]*AddressGroup{},
	}
}

// Package openflowtest builds synthetic node states for benchmarks of the
// pipeline, from the pure renderer up to a real OVS.
package openflowtest

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// MaxPeers is how many addresses of 198.18.0.0/15 can be peers without any
// two merging into one prefix: one of every aligned pair.
const MaxPeers = 1 << 16

// Addr returns the n-th odd address of 198.18.0.0/15 (n < MaxPeers).
func Addr(n int) netip.Addr {
	v := uint32(198)<<24 | uint32(18)<<16 + uint32(2*n+1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// State is a node with `targets` local pods and `rules` policies of one rule
// each, allowing TCP 8080 from (or, with egress, to) the rule's own
// `peers` addresses. Rules use disjoint addresses while rules*peers <=
// MaxPeers. Every rule applies to every target, so a target's clause flow
// lists every rule's conjunction (beyond 2,000 rules the rule table takes
// priority bands, see agent/openflow/bands.go).
func State(rules, peers, targets int, egress bool) openflow.State {
	return StateOf(Shape{Rules: rules, Peers: peers, Targets: targets, Egress: egress})
}

// Shape describes a synthetic node state for StateOf.
type Shape struct {
	// Rules policies of one rule each, Peers addresses per rule, Targets
	// local pods.
	Rules, Peers, Targets int
	// Egress makes egress rules (to the peers) instead of ingress rules.
	Egress bool
	// Spread applies rule r to target r%Targets only and allows TCP port
	// 8000+r%100, so no clause flow is shared by more than
	// max(Rules/Targets, Rules/100) rules. Otherwise every rule applies to
	// every target.
	Spread bool
	// PortsPerProtocol, when not zero, gives every rule that many TCP, UDP
	// and SCTP ports of its own (distinct across rules, from 1024 up)
	// instead of the one port above.
	PortsPerProtocol int
}

// StateOf builds the node state s describes. Peer addresses are
// Addr((r*Peers+j) % MaxPeers) for rule r's j-th peer.
func StateOf(s Shape) openflow.State {
	st := cp.NewNodeState()
	pods := map[string]interfacestore.PodInterface{}
	var members []cp.GroupMember
	for i := range s.Targets {
		port := int32(i + 1)
		p := interfacestore.PodInterface{PodNamespace: "bench", PodName: fmt.Sprintf("t%d", i), OFPort: port,
			MAC: net.HardwareAddr{2, 0, 0, 0, byte(port >> 8), byte(port)}, IP: Addr(MaxPeers - 1 - i)}
		pods[p.PodKey()] = p
		m := cp.GroupMember{Pod: cp.PodReference{Namespace: "bench", Name: p.PodName}, IPs: []string{p.IP.String()}}
		members = append(members, m)
		if s.Spread {
			name := fmt.Sprintf("target-%d", i)
			st.AppliedToGroups[name] = &cp.AppliedToGroup{Name: name, Members: []cp.GroupMember{m}}
		}
	}
	if !s.Spread {
		st.AppliedToGroups["targets"] = &cp.AppliedToGroup{Name: "targets", Members: members}
	}
	dir, types := cp.DirectionIn, []string{"Ingress"}
	if s.Egress {
		dir, types = cp.DirectionOut, []string{"Egress"}
	}
	for r := range s.Rules {
		ag := fmt.Sprintf("ag-%d", r)
		ms := make([]cp.GroupMember, s.Peers)
		for j := range ms {
			ms[j] = cp.GroupMember{Pod: cp.PodReference{Namespace: "peers", Name: fmt.Sprintf("%d-%d", r, j)},
				IPs: []string{Addr((r*s.Peers + j) % MaxPeers).String()}}
		}
		st.AddressGroups[ag] = &cp.AddressGroup{Name: ag, Members: ms}
		peer := cp.Peer{AddressGroups: []string{ag}}
		applied, services := "targets", []cp.Service{{Protocol: cp.ProtocolTCP, Port: "8080"}}
		if s.Spread {
			applied = fmt.Sprintf("target-%d", r%max(s.Targets, 1))
			services = []cp.Service{{Protocol: cp.ProtocolTCP, Port: strconv.Itoa(8000 + r%100)}}
		}
		if s.PortsPerProtocol > 0 {
			services = nil
			for _, proto := range []cp.Protocol{cp.ProtocolTCP, cp.ProtocolUDP, cp.ProtocolSCTP} {
				for k := range s.PortsPerProtocol {
					services = append(services, cp.Service{Protocol: proto, Port: strconv.Itoa(1024 + r*s.PortsPerProtocol + k)})
				}
			}
		}
		rule := cp.Rule{Direction: dir, Services: services}
		if s.Egress {
			rule.To = peer
		} else {
			rule.From = peer
		}
		name := fmt.Sprintf("%s-%d", dir, r)
		st.Policies[name] = &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{applied}, PolicyTypes: types, Rules: []cp.Rule{rule}}
	}
	return openflow.State{Pods: pods, Policy: st}
}

// Merge adds b's policies and groups to a (names must not clash except for
// identical groups).
func Merge(a, b openflow.State) openflow.State {
	for k, v := range b.Policy.Policies {
		a.Policy.Policies[k] = v
	}
	for k, v := range b.Policy.AddressGroups {
		a.Policy.AddressGroups[k] = v
	}
	for k, v := range b.Policy.AppliedToGroups {
		a.Policy.AppliedToGroups[k] = v
	}
	for k, v := range b.Pods {
		a.Pods[k] = v
	}
	return a
}

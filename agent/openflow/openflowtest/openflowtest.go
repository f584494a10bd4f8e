// Package openflowtest builds synthetic node states for benchmarks of the
// pipeline, from the pure renderer up to a real OVS.
package openflowtest

import (
	"fmt"
	"net"
	"net/netip"

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
// MaxPeers.
func State(rules, peers, targets int, egress bool) openflow.State {
	st := cp.NewNodeState()
	pods := map[string]interfacestore.PodInterface{}
	var members []cp.GroupMember
	for i := range targets {
		port := int32(i + 1)
		p := interfacestore.PodInterface{PodNamespace: "bench", PodName: fmt.Sprintf("t%d", i), OFPort: port,
			MAC: net.HardwareAddr{2, 0, 0, 0, byte(port >> 8), byte(port)}, IP: Addr(MaxPeers - 1 - i)}
		pods[p.PodKey()] = p
		members = append(members, cp.GroupMember{Pod: cp.PodReference{Namespace: "bench", Name: p.PodName}, IPs: []string{p.IP.String()}})
	}
	st.AppliedToGroups["targets"] = &cp.AppliedToGroup{Name: "targets", Members: members}
	dir, types := cp.DirectionIn, []string{"Ingress"}
	if egress {
		dir, types = cp.DirectionOut, []string{"Egress"}
	}
	for r := range rules {
		ag := fmt.Sprintf("ag-%d", r)
		ms := make([]cp.GroupMember, peers)
		for j := range ms {
			ms[j] = cp.GroupMember{Pod: cp.PodReference{Namespace: "peers", Name: fmt.Sprintf("%d-%d", r, j)},
				IPs: []string{Addr((r*peers + j) % MaxPeers).String()}}
		}
		st.AddressGroups[ag] = &cp.AddressGroup{Name: ag, Members: ms}
		peer := cp.Peer{AddressGroups: []string{ag}}
		rule := cp.Rule{Direction: dir, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "8080"}}}
		if egress {
			rule.To = peer
		} else {
			rule.From = peer
		}
		name := fmt.Sprintf("%s-%d", dir, r)
		st.Policies[name] = &cp.NetworkPolicy{Name: name, AppliedToGroups: []string{"targets"}, PolicyTypes: types, Rules: []cp.Rule{rule}}
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

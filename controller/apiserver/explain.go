package apiserver

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Snapshot is the controller's model as the read API serves it: every
// policy and every group with all its members (not per node). It is
// read-only.
type Snapshot struct {
	Policies        map[string]*controlplane.NetworkPolicy
	AppliedToGroups map[string]*controlplane.AppliedToGroup
	AddressGroups   map[string]*controlplane.AddressGroup
}

// groupsOf returns the names of the groups that have pod as a member.
func groupsOf[G any](groups map[string]*G, members func(*G) []controlplane.GroupMember, pod controlplane.PodReference) map[string]bool {
	in := map[string]bool{}
	for name, g := range groups {
		if slices.ContainsFunc(members(g), func(m controlplane.GroupMember) bool { return m.Pod == pod }) {
			in[name] = true
		}
	}
	return in
}

func (s *Snapshot) appliedToGroupsOf(pod controlplane.PodReference) map[string]bool {
	return groupsOf(s.AppliedToGroups, func(g *controlplane.AppliedToGroup) []controlplane.GroupMember { return g.Members }, pod)
}

func (s *Snapshot) addressGroupsOf(pod controlplane.PodReference) map[string]bool {
	return groupsOf(s.AddressGroups, func(g *controlplane.AddressGroup) []controlplane.GroupMember { return g.Members }, pod)
}

// sortedPolicies returns the policies sorted by source namespace/name,
// then name.
func (s *Snapshot) sortedPolicies() []*controlplane.NetworkPolicy {
	ps := make([]*controlplane.NetworkPolicy, 0, len(s.Policies))
	for _, p := range s.Policies {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *controlplane.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.SourceRef.Namespace, b.SourceRef.Namespace),
			cmp.Compare(a.SourceRef.Name, b.SourceRef.Name), cmp.Compare(a.Name, b.Name))
	})
	return ps
}

func refOf(p *controlplane.NetworkPolicy) controlplane.PolicyRef {
	return controlplane.PolicyRef{Name: p.Name, SourceRef: p.SourceRef}
}

// QueryEndpoint returns how the snapshot's policies involve pod: the
// policies whose AppliedToGroups hold it, and the rules whose peers'
// AddressGroups hold it. member is the pod as the controller knows it (nil
// when it cannot be a group member, e.g. before it has a node).
func QueryEndpoint(s *Snapshot, pod controlplane.PodReference, member *controlplane.GroupMember) *controlplane.EndpointQuery {
	q := &controlplane.EndpointQuery{
		TypeMeta:  typeMeta("EndpointQuery"),
		Pod:       pod,
		AppliedTo: []controlplane.EndpointAppliedTo{},
		Peers:     []controlplane.EndpointPeer{},
	}
	if member != nil {
		q.Node, q.IPs = member.Node, member.IPs
	}
	appliedTo, addressGroups := s.appliedToGroupsOf(pod), s.addressGroupsOf(pod)
	for _, p := range s.sortedPolicies() {
		for _, g := range p.AppliedToGroups {
			if appliedTo[g] {
				q.AppliedTo = append(q.AppliedTo, controlplane.EndpointAppliedTo{Policy: refOf(p), Group: g, PolicyTypes: p.PolicyTypes})
			}
		}
		for i, r := range p.Rules {
			peer := r.From
			if r.Direction == controlplane.DirectionOut {
				peer = r.To
			}
			for _, g := range peer.AddressGroups {
				if addressGroups[g] {
					q.Peers = append(q.Peers, controlplane.EndpointPeer{Policy: refOf(p), Rule: i, Direction: r.Direction, Group: g})
				}
			}
		}
	}
	return q
}

// Explain returns the model's verdict for a connection from the pod from
// to the pod to on protocol/port, following NetworkPolicy semantics: a pod
// that no policy isolates in a direction allows everything in it; an
// isolated one allows what the union of its policies' rules in that
// direction allows; the connection needs both the source's egress and the
// destination's ingress. Named ports are resolved on the destination pod.
// Both pods must have an IP; the destination's first IP and the source's
// IP of the same family are evaluated.
func Explain(s *Snapshot, from, to *controlplane.GroupMember, protocol controlplane.Protocol, port int32) (*controlplane.Explanation, error) {
	if len(to.IPs) == 0 {
		return nil, fmt.Errorf("pod %s has no IP address yet", to.Pod)
	}
	if len(from.IPs) == 0 {
		return nil, fmt.Errorf("pod %s has no IP address yet", from.Pod)
	}
	toIP, err := netip.ParseAddr(to.IPs[0])
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", to.Pod, err)
	}
	var fromIP netip.Addr
	for _, ip := range from.IPs {
		if a, err := netip.ParseAddr(ip); err == nil && a.Is4() == toIP.Is4() {
			fromIP = a
			break
		}
	}
	if !fromIP.IsValid() {
		return nil, fmt.Errorf("pod %s has no address of the family of %s's %s", from.Pod, to.Pod, toIP)
	}
	e := &controlplane.Explanation{
		TypeMeta: typeMeta("Explanation"),
		From:     from.Pod, To: to.Pod,
		FromIP: fromIP.String(), ToIP: toIP.String(),
		Protocol: protocol, Port: port,
	}
	fromGroups, toGroups := s.addressGroupsOf(from.Pod), s.addressGroupsOf(to.Pod)
	fromTargets, toTargets := s.appliedToGroupsOf(from.Pod), s.appliedToGroupsOf(to.Pod)
	for _, p := range s.sortedPolicies() {
		if slices.Contains(p.PolicyTypes, "Egress") && slices.ContainsFunc(p.AppliedToGroups, func(g string) bool { return fromTargets[g] }) {
			e.Egress.IsolatingPolicies = append(e.Egress.IsolatingPolicies, refOf(p))
			for i, r := range p.Rules {
				if r.Direction == controlplane.DirectionOut && peerMatches(r.To, toGroups, toIP) && servicesMatch(r.Services, protocol, port, to.Ports) {
					e.Egress.AllowingRules = append(e.Egress.AllowingRules, controlplane.RuleRef{Policy: refOf(p), Index: i, Rule: r})
				}
			}
		}
		if slices.Contains(p.PolicyTypes, "Ingress") && slices.ContainsFunc(p.AppliedToGroups, func(g string) bool { return toTargets[g] }) {
			e.Ingress.IsolatingPolicies = append(e.Ingress.IsolatingPolicies, refOf(p))
			for i, r := range p.Rules {
				if r.Direction == controlplane.DirectionIn && peerMatches(r.From, fromGroups, fromIP) && servicesMatch(r.Services, protocol, port, to.Ports) {
					e.Ingress.AllowingRules = append(e.Ingress.AllowingRules, controlplane.RuleRef{Policy: refOf(p), Index: i, Rule: r})
				}
			}
		}
	}
	for _, d := range []*controlplane.DirectionExplanation{&e.Egress, &e.Ingress} {
		d.Isolated = len(d.IsolatingPolicies) > 0
		d.Allowed = !d.Isolated || len(d.AllowingRules) > 0
	}
	e.Verdict = controlplane.VerdictDenied
	if e.Egress.Allowed && e.Ingress.Allowed {
		e.Verdict = controlplane.VerdictAllowed
	}
	return e, nil
}

// peerMatches says whether the other side of a connection, a pod in the
// AddressGroups inGroups with address ip, is in peer. An empty peer
// matches everything.
func peerMatches(peer controlplane.Peer, inGroups map[string]bool, ip netip.Addr) bool {
	if len(peer.AddressGroups) == 0 && len(peer.IPBlocks) == 0 {
		return true
	}
	if slices.ContainsFunc(peer.AddressGroups, func(g string) bool { return inGroups[g] }) {
		return true
	}
	return slices.ContainsFunc(peer.IPBlocks, func(b controlplane.IPBlock) bool { return blockContains(b, ip) })
}

// blockContains says whether ip is in b's CIDR and in none of its
// exceptions. Malformed CIDRs (the controller validated them) match
// nothing.
func blockContains(b controlplane.IPBlock, ip netip.Addr) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Contains(ip) {
		return false
	}
	return !slices.ContainsFunc(b.Except, func(s string) bool {
		ex, err := netip.ParsePrefix(s)
		return err == nil && ex.Contains(ip)
	})
}

// servicesMatch says whether protocol/port is one of services (empty: all
// of them). A named port is resolved on the destination pod's ports.
func servicesMatch(services []controlplane.Service, protocol controlplane.Protocol, port int32, dstPorts []controlplane.NamedPort) bool {
	if len(services) == 0 {
		return true
	}
	return slices.ContainsFunc(services, func(s controlplane.Service) bool {
		proto := cmp.Or(s.Protocol, controlplane.ProtocolTCP)
		if proto != protocol {
			return false
		}
		if s.Port == "" {
			return true
		}
		if n, err := strconv.Atoi(s.Port); err == nil {
			if s.EndPort > 0 {
				return int32(n) <= port && port <= s.EndPort
			}
			return int32(n) == port
		}
		return slices.ContainsFunc(dstPorts, func(np controlplane.NamedPort) bool {
			return np.Name == s.Port && np.Protocol == proto && np.Port == port
		})
	})
}

// ParseProtocol checks a protocol name of the read API.
func ParseProtocol(s string) (controlplane.Protocol, error) {
	switch p := controlplane.Protocol(s); p {
	case controlplane.ProtocolTCP, controlplane.ProtocolUDP, controlplane.ProtocolSCTP:
		return p, nil
	case "":
		return "", errors.New("missing protocol: want TCP, UDP or SCTP")
	}
	return "", fmt.Errorf("unknown protocol %q: want TCP, UDP or SCTP", s)
}

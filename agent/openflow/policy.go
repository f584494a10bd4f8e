package openflow

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go4.org/netipx"

	"palisade.dev/palisade/agent/interfacestore"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// ConjIDs gives the conjunction id of a rule unit, identified by a stable key.
// The same key must always get the same id while the rule exists.
type ConjIDs func(key string) uint32

// direction holds what differs between ingress and egress rules.
type direction struct {
	table, next, defaultTable of.Table
	// metricTable counts the rules' connections; metricNext follows it.
	metricTable, metricNext of.Table
	ruleReg                 uint8
	// ctLabelOfs is where ConntrackCommit records the rule's id in the
	// connection's label.
	ctLabelOfs uint16
	policyType string
	// peers returns the rule's peers in this direction.
	peers func(r cp.Rule) cp.Peer
	// peerMatch matches a peer prefix; targetMatch matches a local pod.
	peerMatch   func(p netip.Prefix) of.Match
	targetMatch func(p interfacestore.PodInterface) of.Match
	// namedPortsOnPeers is true when a named port is resolved on the peer
	// (egress: the destination is the peer) rather than on the target.
	namedPortsOnPeers bool
}

var (
	ingress = direction{
		table: IngressRuleTable, next: IngressMetricTable, defaultTable: IngressDefaultTable,
		metricTable: IngressMetricTable, metricNext: ConntrackCommitTable, ruleReg: regIngressRule, ctLabelOfs: ctLabelIngressOfs, policyType: "Ingress",
		peers:     func(r cp.Rule) cp.Peer { return r.From },
		peerMatch: func(p netip.Prefix) of.Match { return of.Match{Protocol: of.ProtoIP, IPSrc: p} },
		targetMatch: func(p interfacestore.PodInterface) of.Match {
			return of.Match{Protocol: of.ProtoIP, Regs: []of.RegMatch{{Reg: regOutPort, Value: uint32(p.OFPort)}}}
		},
	}
	egress = direction{
		table: EgressRuleTable, next: EgressMetricTable, defaultTable: EgressDefaultTable,
		metricTable: EgressMetricTable, metricNext: L2ForwardingTable, ruleReg: regEgressRule, ctLabelOfs: ctLabelEgressOfs, policyType: "Egress",
		peers:     func(r cp.Rule) cp.Peer { return r.To },
		peerMatch: func(p netip.Prefix) of.Match { return of.Match{Protocol: of.ProtoIP, IPDst: p} },
		targetMatch: func(p interfacestore.PodInterface) of.Match {
			return of.Match{Protocol: of.ProtoIP, InPort: uint32(p.OFPort)}
		},
		namedPortsOnPeers: true,
	}
)

func directionOf(d cp.Direction) direction {
	if d == cp.DirectionOut {
		return egress
	}
	return ingress
}

// portMatch is one L4 match: a protocol and, unless Mask and Port are zero,
// a (masked) destination port.
type portMatch struct {
	proto      of.Protocol
	port, mask uint16
}

func (p portMatch) String() string { return fmt.Sprintf("%s:%d/%x", p.proto, p.port, p.mask) }

// unit is one conjunction: a rule, or the part of a rule whose named ports
// resolve to the same numbers.
type unit struct {
	key      string
	dir      direction
	targets  []interfacestore.PodInterface
	peers    []netip.Prefix // nil: any peer
	anyPeer  bool
	services []portMatch // nil with anyService: any service
	anyPort  bool
}

// PolicyFlows renders the node's policy state into flows: for every rule, one
// conjunction with a clause per present dimension (peers, targets, services),
// the action flow, and the default drops of isolated pods. localPods maps
// "namespace/name" to the pods on this node.
func PolicyFlows(st *cp.NodeState, localPods map[string]interfacestore.PodInterface, ids ConjIDs) []of.Flow {
	return appendPolicyFlows(make([]of.Flow, 0, estimatePolicyFlows(st, len(localPods))), st, localPods, ids)
}

// estimatePolicyFlows is about how many flows PolicyFlows makes, so its
// result is allocated once (flows are large values).
func estimatePolicyFlows(st *cp.NodeState, localPods int) int {
	if st == nil {
		return 0
	}
	n := 0
	for _, pol := range st.Policies {
		// At most this many local pods are the policy's targets.
		targets := 0
		for _, g := range pol.AppliedToGroups {
			if grp := st.AppliedToGroups[g]; grp != nil {
				targets += len(grp.Members)
			}
		}
		targets = min(targets, localPods)
		n += 2 * targets // default drops
		for _, r := range pol.Rules {
			peer := directionOf(r.Direction).peers(r)
			// Targets, the conjunction's action flow, two metric flows,
			// services (a range may take several), IP blocks and members.
			n += targets + 3 + 2*len(r.Services) + 4*len(peer.IPBlocks)
			for _, g := range peer.AddressGroups {
				if ag := st.AddressGroups[g]; ag != nil {
					n += len(ag.Members)
				}
			}
		}
	}
	return n
}

func appendPolicyFlows(flows []of.Flow, st *cp.NodeState, localPods map[string]interfacestore.PodInterface, ids ConjIDs) []of.Flow {
	if st == nil {
		return flows
	}
	names := make([]string, 0, len(st.Policies))
	for n := range st.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pol := st.Policies[name]
		if targets := appliedTo(st, pol, localPods); len(targets) > 0 {
			flows = appendOnePolicyFlows(flows, st, pol, targets, ids)
		}
	}
	return flows
}

// appendOnePolicyFlows renders one policy that applies to targets (not
// empty): its rules' conjunctions and the default drops of its targets.
func appendOnePolicyFlows(flows []of.Flow, st *cp.NodeState, pol *cp.NetworkPolicy, targets []interfacestore.PodInterface, ids ConjIDs) []of.Flow {
	for i, r := range pol.Rules {
		for _, u := range ruleUnits(st, pol, i, r, targets) {
			flows = appendUnitFlows(flows, u, ids(u.key))
		}
	}
	for _, d := range []direction{ingress, egress} {
		if !slices.Contains(pol.PolicyTypes, d.policyType) {
			continue
		}
		for _, t := range targets {
			flows = append(flows, of.Flow{
				Table: d.defaultTable, Priority: priorityNormal, Cookie: CookieIsolate | uint64(t.OFPort),
				Match: d.targetMatch(t),
			})
		}
	}
	return flows
}

// appliedTo returns the local pods a policy applies to, sorted by port.
func appliedTo(st *cp.NodeState, pol *cp.NetworkPolicy, localPods map[string]interfacestore.PodInterface) []interfacestore.PodInterface {
	seen := map[int32]interfacestore.PodInterface{}
	for _, g := range pol.AppliedToGroups {
		grp := st.AppliedToGroups[g]
		if grp == nil {
			continue
		}
		for _, m := range grp.Members {
			if p, ok := localPods[m.Pod.String()]; ok && p.OFPort > 0 {
				seen[p.OFPort] = p
			}
		}
	}
	out := make([]interfacestore.PodInterface, 0, len(seen))
	for _, p := range seen {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OFPort < out[j].OFPort })
	return out
}

// ruleUnits splits a rule into conjunctions. Without named ports a rule is one
// unit; with them, targets (ingress) or peers (egress) are grouped by what the
// named ports resolve to on each pod.
func ruleUnits(st *cp.NodeState, pol *cp.NetworkPolicy, idx int, r cp.Rule, targets []interfacestore.PodInterface) []unit {
	d := directionOf(r.Direction)
	peer := d.peers(r)
	base := fmt.Sprintf("%s/%s%d", pol.Name, r.Direction, idx)
	anyPeer := len(peer.AddressGroups) == 0 && len(peer.IPBlocks) == 0
	anyPort := len(r.Services) == 0
	hasNamed := slices.ContainsFunc(r.Services, func(s cp.Service) bool { return isNamed(s.Port) })

	if !hasNamed {
		return []unit{{key: base, dir: d, targets: targets, anyPeer: anyPeer, anyPort: anyPort,
			peers: peerPrefixes(st, peer, nil), services: servicePorts(r.Services, nil)}}
	}

	var units []unit
	if !d.namedPortsOnPeers {
		// Ingress: resolve on each target pod.
		byRes := map[string]*unit{}
		var order []string
		for _, t := range targets {
			ports := memberPorts(st, pol, t)
			svcs := servicePorts(r.Services, ports)
			k := resolutionKey(svcs)
			u, ok := byRes[k]
			if !ok {
				u = &unit{key: base + "/" + k, dir: d, anyPeer: anyPeer, peers: peerPrefixes(st, peer, nil), services: svcs}
				byRes[k] = u
				order = append(order, k)
			}
			u.targets = append(u.targets, t)
		}
		for _, k := range order {
			units = append(units, *byRes[k])
		}
		return units
	}

	// Egress: resolve on each peer pod; ipBlock peers only take numeric ports.
	type group struct {
		svcs  []portMatch
		peers []cp.GroupMember
		block bool
	}
	byRes := map[string]*group{}
	add := func(svcs []portMatch, m *cp.GroupMember) {
		k := resolutionKey(svcs)
		g, ok := byRes[k]
		if !ok {
			g = &group{svcs: svcs}
			byRes[k] = g
		}
		if m == nil {
			g.block = true
		} else {
			g.peers = append(g.peers, *m)
		}
	}
	if anyPeer || len(peer.IPBlocks) > 0 {
		add(servicePorts(r.Services, []cp.NamedPort{}), nil)
	}
	for _, name := range peer.AddressGroups {
		if ag := st.AddressGroups[name]; ag != nil {
			for i := range ag.Members {
				add(servicePorts(r.Services, ag.Members[i].Ports), &ag.Members[i])
			}
		}
	}
	keys := make([]string, 0, len(byRes))
	for k := range byRes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g := byRes[k]
		if len(g.svcs) == 0 {
			continue // nothing resolved: this part allows nothing
		}
		u := unit{key: base + "/" + k, dir: d, targets: targets, services: g.svcs}
		if anyPeer && g.block {
			u.anyPeer = true
		} else {
			var b netipx.IPSetBuilder
			if g.block {
				addBlocks(&b, peer.IPBlocks)
			}
			addMembers(&b, g.peers)
			u.peers = prefixes(&b)
		}
		units = append(units, u)
	}
	return units
}

func isNamed(port string) bool {
	if port == "" {
		return false
	}
	_, err := strconv.Atoi(port)
	return err != nil
}

// memberPorts finds a local pod's named ports in the policy's AppliedToGroups.
func memberPorts(st *cp.NodeState, pol *cp.NetworkPolicy, p interfacestore.PodInterface) []cp.NamedPort {
	for _, g := range pol.AppliedToGroups {
		if grp := st.AppliedToGroups[g]; grp != nil {
			for _, m := range grp.Members {
				if m.Pod.String() == p.PodKey() {
					return m.Ports
				}
			}
		}
	}
	return nil
}

func resolutionKey(svcs []portMatch) string {
	s := make([]string, len(svcs))
	for i, p := range svcs {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// peerPrefixes is the union of a peer's address groups and IP blocks (each
// block minus its exceptions), as the fewest prefixes.
func peerPrefixes(st *cp.NodeState, peer cp.Peer, _ []cp.NamedPort) []netip.Prefix {
	var b netipx.IPSetBuilder
	addBlocks(&b, peer.IPBlocks)
	for _, name := range peer.AddressGroups {
		if ag := st.AddressGroups[name]; ag != nil {
			addMembers(&b, ag.Members)
		}
	}
	return prefixes(&b)
}

func addBlocks(b *netipx.IPSetBuilder, blocks []cp.IPBlock) {
	for _, blk := range blocks {
		var one netipx.IPSetBuilder
		p, err := netip.ParsePrefix(blk.CIDR)
		if err != nil || !p.Addr().Is4() {
			continue // the controller validates; IPv6 is not in the pipeline yet
		}
		one.AddPrefix(p.Masked())
		for _, e := range blk.Except {
			if ep, err := netip.ParsePrefix(e); err == nil {
				one.RemovePrefix(ep.Masked())
			}
		}
		s, _ := one.IPSet()
		b.AddSet(s)
	}
}

func addMembers(b *netipx.IPSetBuilder, members []cp.GroupMember) {
	for _, m := range members {
		for _, ip := range m.IPs {
			if a, err := netip.ParseAddr(ip); err == nil && a.Is4() {
				b.Add(a)
			}
		}
	}
}

func prefixes(b *netipx.IPSetBuilder) []netip.Prefix {
	s, _ := b.IPSet()
	ranges := s.Ranges()
	// Appending each range's prefixes allocates once, where
	// IPSet.Prefixes allocates for every range.
	ps := make([]netip.Prefix, 0, len(ranges))
	for _, r := range ranges {
		ps = r.AppendPrefixes(ps)
	}
	return ps
}

var protocols = map[cp.Protocol]of.Protocol{
	cp.ProtocolTCP: of.ProtoTCP, cp.ProtocolUDP: of.ProtoUDP, cp.ProtocolSCTP: of.ProtoSCTP, "": of.ProtoTCP,
}

// servicePorts turns services into L4 matches. Named ports are resolved
// against named (nil: leave them out); a name that does not resolve matches
// nothing.
func servicePorts(svcs []cp.Service, named []cp.NamedPort) []portMatch {
	var out []portMatch
	seen := map[portMatch]bool{}
	add := func(p portMatch) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, s := range svcs {
		proto, ok := protocols[s.Protocol]
		if !ok {
			continue
		}
		switch {
		case s.Port == "":
			add(portMatch{proto: proto})
		case isNamed(s.Port):
			for _, np := range named {
				if np.Name == s.Port && protocols[np.Protocol] == proto && np.Port > 0 && np.Port < 65536 {
					add(portMatch{proto: proto, port: uint16(np.Port), mask: 0xffff})
				}
			}
		default:
			n, _ := strconv.Atoi(s.Port)
			if n <= 0 || n > 65535 {
				continue
			}
			end := int(s.EndPort)
			if end < n {
				end = n
			}
			for _, r := range portRangeMasks(uint16(n), uint16(min(end, 65535))) {
				add(portMatch{proto: proto, port: r[0], mask: r[1]})
			}
		}
	}
	return out
}

// portRangeMasks covers [start, end] with value/mask pairs.
func portRangeMasks(start, end uint16) [][2]uint16 {
	var out [][2]uint16
	s, e := uint32(start), uint32(end)
	for s <= e {
		size := uint32(1)
		for s&(size*2-1) == 0 && s+size*2-1 <= e && size < 1<<16 {
			size *= 2
		}
		out = append(out, [2]uint16{uint16(s), uint16(^(size - 1))})
		s += size
	}
	return out
}

func (p portMatch) match() of.Match {
	m := of.Match{Protocol: p.proto, TpDst: p.port}
	if p.mask != 0xffff {
		m.TpDstMask = p.mask
	}
	return m
}

// appendUnitFlows renders one conjunction. Clauses are numbered in a fixed
// order: peers, targets, services, only those present. A unit with only the
// target clause needs no conjunction: its target flows carry the action.
func appendUnitFlows(flows []of.Flow, u unit, id uint32) []of.Flow {
	cookie := CookiePolicy | uint64(id)
	action := []of.Action{
		of.LoadReg{Reg: u.dir.ruleReg, Start: 0, End: 31, Value: id},
		gotoTable(u.dir.next),
	}
	var clauses [][]of.Match
	if !u.anyPeer {
		if len(u.peers) == 0 {
			return flows // peers that match nothing: the rule allows nothing
		}
		ms := make([]of.Match, len(u.peers))
		for i, p := range u.peers {
			ms[i] = u.dir.peerMatch(p)
		}
		clauses = append(clauses, ms)
	}
	targets := make([]of.Match, len(u.targets))
	for i, t := range u.targets {
		targets[i] = u.dir.targetMatch(t)
	}
	clauses = append(clauses, targets)
	if !u.anyPort {
		if len(u.services) == 0 {
			return flows
		}
		ms := make([]of.Match, len(u.services))
		for i, s := range u.services {
			ms[i] = s.match()
		}
		clauses = append(clauses, ms)
	}

	if len(clauses) == 1 {
		for _, m := range targets {
			// One above the conjunction clauses, so an allow-all for a pod
			// wins over a conjunction that shares its target match.
			flows = append(flows, of.Flow{Table: u.dir.table, Priority: priorityRule + 1, Cookie: cookie, Match: m, Actions: action})
		}
		return appendMetricFlows(flows, u.dir, id)
	}
	n := uint8(len(clauses))
	for k, ms := range clauses {
		// The clause's flows share one action list (merge copies it
		// before adding other rules' conjunctions to it).
		conj := []of.Action{of.Conjunction{ID: id, Clause: uint8(k + 1), NClauses: n}}
		for _, m := range ms {
			flows = append(flows, of.Flow{Table: u.dir.table, Priority: priorityRule, Cookie: cookie, Match: m, Actions: conj})
		}
	}
	flows = append(flows, of.Flow{Table: u.dir.table, Priority: priorityRule, Cookie: cookie,
		Match: of.Match{Protocol: of.ProtoIP, ConjID: id}, Actions: action})
	return appendMetricFlows(flows, u.dir, id)
}

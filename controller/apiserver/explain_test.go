package apiserver

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

func pod(ns, name, ip string, ports ...cp.NamedPort) *cp.GroupMember {
	return &cp.GroupMember{Pod: cp.PodReference{Namespace: ns, Name: name}, IPs: []string{ip}, Node: "n1", Ports: ports}
}

// explainFixture: client (198.18.1.1) and other (198.18.1.3) talk to web
// (198.18.1.2, named port http=8080/TCP, dns=53/UDP).
var (
	client = pod("ns", "client", "198.18.1.1")
	web    = pod("ns", "web", "198.18.1.2", cp.NamedPort{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP},
		cp.NamedPort{Name: "dns", Port: 53, Protocol: cp.ProtocolUDP})
	other = pod("ns", "other", "198.18.1.3")
)

func snapshot(policies ...*cp.NetworkPolicy) *Snapshot {
	s := &Snapshot{
		Policies: map[string]*cp.NetworkPolicy{},
		AppliedToGroups: map[string]*cp.AppliedToGroup{
			"web":    {Name: "web", Members: []cp.GroupMember{*web}},
			"client": {Name: "client", Members: []cp.GroupMember{*client}},
		},
		AddressGroups: map[string]*cp.AddressGroup{
			"client": {Name: "client", Members: []cp.GroupMember{*client}},
			"web":    {Name: "web", Members: []cp.GroupMember{*web}},
		},
	}
	for _, p := range policies {
		s.Policies[p.Name] = p
	}
	return s
}

func policy(name, appliedTo string, types []string, rules ...cp.Rule) *cp.NetworkPolicy {
	return &cp.NetworkPolicy{Name: name, SourceRef: cp.NetworkPolicyReference{Type: "K8sNetworkPolicy", Namespace: "ns", Name: name},
		AppliedToGroups: []string{appliedTo}, PolicyTypes: types, Rules: rules}
}

var (
	ingress = []string{"Ingress"}
	egress  = []string{"Egress"}
)

func in(from cp.Peer, services ...cp.Service) cp.Rule {
	return cp.Rule{Direction: cp.DirectionIn, From: from, Services: services}
}

func out(to cp.Peer, services ...cp.Service) cp.Rule {
	return cp.Rule{Direction: cp.DirectionOut, To: to, Services: services}
}

func groups(g ...string) cp.Peer { return cp.Peer{AddressGroups: g} }

func tcp(port string, end int32) cp.Service {
	return cp.Service{Protocol: cp.ProtocolTCP, Port: port, EndPort: end}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		name     string
		policies []*cp.NetworkPolicy
		from, to *cp.GroupMember
		proto    cp.Protocol
		port     int32
		want     string // verdict
		// wantEgress and wantIngress are "-" (not isolated), or the
		// allowing rules as "policy#index" joined by ",", "" for none.
		wantEgress, wantIngress string
	}{
		{name: "no policy", want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "-"},
		{name: "isolated, no rule", policies: []*cp.NetworkPolicy{policy("deny", "web", ingress)},
			want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "egress-only policy does not isolate ingress", policies: []*cp.NetworkPolicy{policy("eg", "web", egress)},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "-"},
		{name: "allowed by group and port", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(groups("client"), tcp("8080", 0)))},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "p#0"},
		{name: "wrong port", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(groups("client"), tcp("80", 0)))},
			want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "wrong protocol", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(groups("client"), tcp("8080", 0)))},
			proto: cp.ProtocolUDP, want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "peer not in group", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(groups("client")))},
			from: other, want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "empty from and ports allow all", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{}))},
			from: other, want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "p#0"},
		{name: "union of policies", policies: []*cp.NetworkPolicy{
			policy("a", "web", ingress, in(groups("client"), tcp("80", 0))),
			policy("b", "web", ingress, in(groups("client"), tcp("8080", 0)), in(cp.Peer{}, tcp("8080", 0)))},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "b#0,b#1"},
		{name: "endPort range", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{}, tcp("8000", 8100)))},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "p#0"},
		{name: "beyond endPort", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{}, tcp("8000", 8079)))},
			want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "named port on the destination", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{}, tcp("http", 0)))},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "p#0"},
		{name: "named port of another protocol", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{}, tcp("dns", 0)))},
			port: 53, want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "named port resolved on the destination for egress", policies: []*cp.NetworkPolicy{policy("p", "client", egress, out(groups("web"), tcp("http", 0)))},
			want: cp.VerdictAllowed, wantEgress: "p#0", wantIngress: "-"},
		{name: "named port absent on the destination", policies: []*cp.NetworkPolicy{policy("p", "client", egress, out(cp.Peer{}, tcp("http", 0)))},
			from: client, to: other, want: cp.VerdictDenied, wantEgress: "", wantIngress: "-"},
		{name: "ipBlock", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.18.1.0/24"}}}))},
			want: cp.VerdictAllowed, wantEgress: "-", wantIngress: "p#0"},
		{name: "ipBlock except", policies: []*cp.NetworkPolicy{policy("p", "web", ingress, in(cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.18.1.0/24", Except: []string{"198.18.1.0/31"}}}}))},
			want: cp.VerdictDenied, wantEgress: "-", wantIngress: ""},
		{name: "egress to ipBlock", policies: []*cp.NetworkPolicy{policy("p", "client", egress, out(cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.18.1.2/32"}}}))},
			want: cp.VerdictAllowed, wantEgress: "p#0", wantIngress: "-"},
		{name: "egress denied, ingress allowed", policies: []*cp.NetworkPolicy{
			policy("e", "client", egress, out(groups("client"))),
			policy("i", "web", ingress, in(groups("client")))},
			want: cp.VerdictDenied, wantEgress: "", wantIngress: "i#0"},
		{name: "ingress rules do not allow egress", policies: []*cp.NetworkPolicy{policy("p", "client", []string{"Ingress", "Egress"}, in(cp.Peer{}))},
			want: cp.VerdictDenied, wantEgress: "", wantIngress: "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from, to := cmpOr(tc.from, client), cmpOr(tc.to, web)
			proto := tc.proto
			if proto == "" {
				proto = cp.ProtocolTCP
			}
			port := tc.port
			if port == 0 {
				port = 8080
			}
			e, err := Explain(snapshot(tc.policies...), from, to, proto, port)
			if err != nil {
				t.Fatal(err)
			}
			if e.Verdict != tc.want {
				t.Errorf("verdict %s, want %s", e.Verdict, tc.want)
			}
			if got := sideString(e.Egress); got != tc.wantEgress {
				t.Errorf("egress %q, want %q", got, tc.wantEgress)
			}
			if got := sideString(e.Ingress); got != tc.wantIngress {
				t.Errorf("ingress %q, want %q", got, tc.wantIngress)
			}
			if e.Kind != "Explanation" || e.APIVersion != cp.GroupVersion {
				t.Errorf("type %s/%s", e.APIVersion, e.Kind)
			}
		})
	}
}

func cmpOr(a, b *cp.GroupMember) *cp.GroupMember {
	if a != nil {
		return a
	}
	return b
}

func sideString(d cp.DirectionExplanation) string {
	if !d.Isolated {
		if !d.Allowed {
			return "not isolated but denied"
		}
		return "-"
	}
	var rules []string
	for _, r := range d.AllowingRules {
		rules = append(rules, r.Policy.Name+"#"+strconv.Itoa(r.Index))
	}
	if d.Allowed != (len(rules) > 0) {
		return "inconsistent"
	}
	return strings.Join(rules, ",")
}

func TestExplainErrors(t *testing.T) {
	noIP := &cp.GroupMember{Pod: cp.PodReference{Namespace: "ns", Name: "new"}}
	v6 := pod("ns", "v6", "fd00::1")
	for _, tc := range []struct {
		name     string
		from, to *cp.GroupMember
		want     string
	}{
		{"destination without IP", client, noIP, "ns/new has no IP"},
		{"source without IP", noIP, web, "ns/new has no IP"},
		{"no common family", client, v6, "no address of the family"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Explain(snapshot(), tc.from, tc.to, cp.ProtocolTCP, 80)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestQueryEndpoint(t *testing.T) {
	s := snapshot(
		policy("a", "web", ingress, in(groups("client"), tcp("80", 0))),
		policy("b", "client", egress, out(groups("web")), out(groups("client", "web"))),
	)
	got := QueryEndpoint(s, web.Pod, web)
	ref := func(n string) cp.PolicyRef {
		return cp.PolicyRef{Name: n, SourceRef: cp.NetworkPolicyReference{Type: "K8sNetworkPolicy", Namespace: "ns", Name: n}}
	}
	want := &cp.EndpointQuery{
		TypeMeta: typeMeta("EndpointQuery"),
		Pod:      web.Pod, Node: "n1", IPs: web.IPs,
		AppliedTo: []cp.EndpointAppliedTo{{Policy: ref("a"), Group: "web", PolicyTypes: ingress}},
		Peers: []cp.EndpointPeer{
			{Policy: ref("b"), Rule: 0, Direction: cp.DirectionOut, Group: "web"},
			{Policy: ref("b"), Rule: 1, Direction: cp.DirectionOut, Group: "web"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("QueryEndpoint(web) (-want +got):\n%s", diff)
	}
	if got := QueryEndpoint(s, other.Pod, nil); len(got.AppliedTo) != 0 || len(got.Peers) != 0 || got.Node != "" {
		t.Errorf("QueryEndpoint(other) = %+v, want nothing", got)
	}
}

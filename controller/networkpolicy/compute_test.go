package networkpolicy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// Fixtures. Addresses are from 198.18.0.0/15 only.

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

type podOpt func(*corev1.Pod)

func pod(ns, name, node, ip string, labels map[string]string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func withPorts(ports ...corev1.ContainerPort) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports = ports }
}

func member(ns, name, node, ip string, ports ...cp.NamedPort) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: ns, Name: name}, IPs: []string{ip}, Node: node, Ports: ports}
}

// peer is m as an AddressGroup carries it: no node, and its ports only if
// withPorts (an egress rule with a named port uses the group).
func peer(m cp.GroupMember, withPorts bool) cp.GroupMember {
	return m.AsPeer(withPorts)
}

func sel(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func policy(ns, name string, podSelector *metav1.LabelSelector, spec func(*networkingv1.NetworkPolicySpec)) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *podSelector},
	}
	if spec != nil {
		spec(&np.Spec)
	}
	return np
}

func ptr[T any](v T) *T { return &v }

// groupName is the name Compute gives the group of the given selectors.
func groupName(t *testing.T, ns string, podSelector, nsSelector *metav1.LabelSelector) string {
	t.Helper()
	_, groups, err := convertPeers(ns, []networkingv1.NetworkPolicyPeer{{PodSelector: podSelector, NamespaceSelector: nsSelector}})
	if err != nil || len(groups) != 1 {
		t.Fatalf("groupName: %v", err)
	}
	return groups[0].name()
}

func tcp(port string) cp.Service { return cp.Service{Protocol: cp.ProtocolTCP, Port: port} }

func TestCompute(t *testing.T) {
	nsA := namespace("a", map[string]string{"team": "x"})
	nsB := namespace("b", map[string]string{"team": "y"})
	web := pod("a", "web", "node1", "198.18.0.10", map[string]string{"app": "web"},
		withPorts(corev1.ContainerPort{Name: "http", ContainerPort: 8080}, corev1.ContainerPort{ContainerPort: 9000},
			corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}))
	clientA := pod("a", "client", "node2", "198.18.0.11", map[string]string{"app": "client"})
	clientB := pod("b", "client", "node2", "198.18.1.11", map[string]string{"app": "client"})
	webMember := member("a", "web", "node1", "198.18.0.10",
		cp.NamedPort{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP}, cp.NamedPort{Name: "dns", Port: 53, Protocol: cp.ProtocolUDP})
	clientAMember := member("a", "client", "node2", "198.18.0.11")
	clientBMember := member("b", "client", "node2", "198.18.1.11")
	webATG := groupName(t, "a", sel("app", "web"), nil)
	clientAG := groupName(t, "a", sel("app", "client"), nil)
	allNSClientAG := groupName(t, "a", sel("app", "client"), sel())
	teamYAG := groupName(t, "a", nil, sel("team", "y"))
	teamYClientAG := groupName(t, "a", sel("app", "client"), sel("team", "y"))
	inputs := func(nps ...*networkingv1.NetworkPolicy) Inputs {
		return Inputs{
			Pods:            []*corev1.Pod{web, clientA, clientB},
			Namespaces:      []*corev1.Namespace{nsA, nsB},
			NetworkPolicies: nps,
		}
	}
	webPolicy := func(rules []cp.Rule, types ...string) *cp.NetworkPolicy {
		return &cp.NetworkPolicy{
			Name:            "uid-p",
			SourceRef:       cp.NetworkPolicyReference{Type: SourceTypeK8sNetworkPolicy, Namespace: "a", Name: "p", UID: "uid-p"},
			Rules:           rules,
			AppliedToGroups: []string{webATG},
			PolicyTypes:     types,
		}
	}
	atgs := map[string]*cp.AppliedToGroup{webATG: {Name: webATG, Members: []cp.GroupMember{webMember}}}

	tests := []struct {
		name   string
		in     Inputs
		want   *Model
		errFor string // key of a policy expected in Model.Errors
	}{
		{
			name: "ingress from podSelector in the policy namespace, numeric and named ports",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}},
					Ports: []networkingv1.NetworkPolicyPort{
						{Port: ptr(intstr.FromInt32(80))},
						{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromString("dns"))},
						{Protocol: ptr(corev1.ProtocolSCTP), Port: ptr(intstr.FromInt32(7000)), EndPort: ptr[int32](7010)},
						{Protocol: ptr(corev1.ProtocolTCP)},
					},
				}}
			})),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{"uid-p": webPolicy([]cp.Rule{{
					Direction: cp.DirectionIn,
					From:      cp.Peer{AddressGroups: []string{clientAG}},
					Services: []cp.Service{tcp("80"), {Protocol: cp.ProtocolUDP, Port: "dns"},
						{Protocol: cp.ProtocolSCTP, Port: "7000", EndPort: 7010}, {Protocol: cp.ProtocolTCP}},
				}}, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{clientAG: {Name: clientAG, Members: []cp.GroupMember{clientAMember}}},
			},
		},
		{
			name: "empty from and empty ports allow everything",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
			})),
			want: &Model{
				Policies:        map[string]*cp.NetworkPolicy{"uid-p": webPolicy([]cp.Rule{{Direction: cp.DirectionIn}}, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "no rules isolates for ingress only",
			in:   inputs(policy("a", "p", sel("app", "web"), nil)),
			want: &Model{
				Policies:        map[string]*cp.NetworkPolicy{"uid-p": webPolicy(nil, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "egress rules default policyTypes to Ingress and Egress; to is symmetric to from",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{
					To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(443))}},
				}}
			})),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{"uid-p": webPolicy([]cp.Rule{{
					Direction: cp.DirectionOut,
					To:        cp.Peer{AddressGroups: []string{clientAG}},
					Services:  []cp.Service{tcp("443")},
				}}, "Ingress", "Egress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{clientAG: {Name: clientAG, Members: []cp.GroupMember{clientAMember}}},
			},
		},
		{
			name: "a group used with named ports by an ingress and an egress rule",
			in: inputs(
				policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
						From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
						Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
					}}
				}),
				policy("a", "q", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
					s.Egress = []networkingv1.NetworkPolicyEgressRule{{
						To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
						Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
					}}
				}),
			),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{
					"uid-p": webPolicy([]cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{webATG}}, Services: []cp.Service{tcp("http")}}}, "Ingress"),
					"uid-q": {
						Name:      "uid-q",
						SourceRef: cp.NetworkPolicyReference{Type: SourceTypeK8sNetworkPolicy, Namespace: "a", Name: "q", UID: "uid-q"},
						Rules: []cp.Rule{{Direction: cp.DirectionOut, To: cp.Peer{AddressGroups: []string{webATG}},
							Services: []cp.Service{tcp("http")}}},
						AppliedToGroups: []string{clientAG},
						PolicyTypes:     []string{"Ingress", "Egress"},
					},
				},
				AppliedToGroups: map[string]*cp.AppliedToGroup{
					webATG:   {Name: webATG, Members: []cp.GroupMember{webMember}},
					clientAG: {Name: clientAG, Members: []cp.GroupMember{clientAMember}},
				},
				AddressGroups: map[string]*cp.AddressGroup{webATG: {Name: webATG, Members: []cp.GroupMember{webMember}}},
			},
		},
		{
			name: "stored policyTypes are kept and rules of other directions ignored",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}}}}
			})),
			want: &Model{
				Policies:        map[string]*cp.NetworkPolicy{"uid-p": webPolicy(nil, "Egress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "namespaceSelector: {} is every namespace, labels select namespaces, pod and namespace selectors AND",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: sel("app", "client"), NamespaceSelector: sel()},
					{NamespaceSelector: sel("team", "y")},
					{PodSelector: sel("app", "client"), NamespaceSelector: sel("team", "y")},
				}}}
			})),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{"uid-p": webPolicy([]cp.Rule{{
					Direction: cp.DirectionIn,
					From:      cp.Peer{AddressGroups: []string{allNSClientAG, teamYAG, teamYClientAG}},
				}}, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups: map[string]*cp.AddressGroup{
					allNSClientAG: {Name: allNSClientAG, Members: []cp.GroupMember{clientAMember, clientBMember}},
					teamYAG:       {Name: teamYAG, Members: []cp.GroupMember{clientBMember}},
					teamYClientAG: {Name: teamYClientAG, Members: []cp.GroupMember{clientBMember}},
				},
			},
		},
		{
			name: "matchExpressions select pods",
			in: inputs(policy("a", "p", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "db"}},
			}}, nil)),
			want: func() *Model {
				name := groupName(t, "a", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "web"}},
				}}, nil)
				p := webPolicy(nil, "Ingress")
				p.AppliedToGroups = []string{name}
				return &Model{
					Policies:        map[string]*cp.NetworkPolicy{"uid-p": p},
					AppliedToGroups: map[string]*cp.AppliedToGroup{name: {Name: name, Members: []cp.GroupMember{webMember}}},
					AddressGroups:   map[string]*cp.AddressGroup{},
				}
			}(),
		},
		{
			name: "ipBlock with except is inline in the peer",
			in: inputs(policy("a", "p", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/16", Except: []string{"198.18.1.0/24"}}},
				}}}
			})),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{"uid-p": webPolicy([]cp.Rule{{
					Direction: cp.DirectionIn,
					From:      cp.Peer{IPBlocks: []cp.IPBlock{{CIDR: "198.18.0.0/16", Except: []string{"198.18.1.0/24"}}}},
				}}, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "policies with identical selectors share groups; name falls back to namespace/name without UID",
			in: inputs(
				policy("a", "p", sel("app", "web"), nil),
				func() *networkingv1.NetworkPolicy {
					np := policy("a", "q", sel("app", "web"), nil)
					np.UID = ""
					return np
				}(),
			),
			want: &Model{
				Policies: map[string]*cp.NetworkPolicy{
					"uid-p": webPolicy(nil, "Ingress"),
					"a/q": {
						Name:            "a/q",
						SourceRef:       cp.NetworkPolicyReference{Type: SourceTypeK8sNetworkPolicy, Namespace: "a", Name: "q"},
						AppliedToGroups: []string{webATG},
						PolicyTypes:     []string{"Ingress"},
					},
				},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "invalid selector skips only that policy",
			in: inputs(
				policy("a", "p", sel("app", "web"), nil),
				policy("a", "bad", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}},
					}}}}
				}),
			),
			want: &Model{
				Policies:        map[string]*cp.NetworkPolicy{"uid-p": webPolicy(nil, "Ingress")},
				AppliedToGroups: atgs,
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
			errFor: "a/bad",
		},
		{
			name: "endPort without a numeric port is an error",
			in: inputs(policy("a", "bad", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
					{Port: ptr(intstr.FromString("http")), EndPort: ptr[int32](90)},
				}}}
			})),
			want: &Model{
				Policies:        map[string]*cp.NetworkPolicy{},
				AppliedToGroups: map[string]*cp.AppliedToGroup{},
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
			errFor: "a/bad",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(tt.in)
			if tt.errFor == "" {
				if len(got.Errors) != 0 {
					t.Fatalf("unexpected errors: %v", got.Errors)
				}
			} else {
				err, ok := got.Errors[tt.errFor]
				if !ok || len(got.Errors) != 1 {
					t.Fatalf("want exactly one error for %s, got %v", tt.errFor, got.Errors)
				}
				if !strings.Contains(err.Error(), tt.errFor) {
					t.Errorf("error %q does not name the policy %s", err, tt.errFor)
				}
			}
			got.Errors = nil
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Compute() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMembers(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	phase := func(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
	dualStack := func(p *corev1.Pod) {
		p.Status.PodIPs = []corev1.PodIP{{IP: "198.18.0.5"}, {IP: "2001:db8::5"}}
	}
	onlyPodIP := func(p *corev1.Pod) { p.Status.PodIPs = nil }
	l := map[string]string{"app": "x"}
	pods := []*corev1.Pod{
		pod("a", "running", "node1", "198.18.0.1", l),
		pod("a", "pending-with-ip", "node1", "198.18.0.2", l, phase(corev1.PodPending)),
		pod("a", "host-network", "node1", "198.18.0.3", l, hostNet),
		pod("a", "succeeded", "node1", "198.18.0.4", l, phase(corev1.PodSucceeded)),
		pod("a", "failed", "node1", "198.18.0.6", l, phase(corev1.PodFailed)),
		pod("a", "no-ip", "node1", "", l),
		pod("a", "unscheduled", "", "198.18.0.7", l),
		pod("a", "dual-stack", "node2", "198.18.0.5", l, dualStack),
		pod("a", "pod-ip-only", "node2", "198.18.0.8", l, onlyPodIP),
		pod("b", "other-namespace", "node1", "198.18.0.9", l),
	}
	idx := newMemberIndex(pods, nil)
	got := idx.members(groupSelector{Namespace: "a", PodSelector: mustSelector(t, sel("app", "x"))})
	want := []cp.GroupMember{
		{Pod: cp.PodReference{Namespace: "a", Name: "dual-stack"}, IPs: []string{"198.18.0.5", "2001:db8::5"}, Node: "node2"},
		// Scheduled but without an IP yet: a member (its node must isolate
		// it from the first packet), with no address.
		{Pod: cp.PodReference{Namespace: "a", Name: "no-ip"}, Node: "node1"},
		member("a", "pending-with-ip", "node1", "198.18.0.2"),
		member("a", "pod-ip-only", "node2", "198.18.0.8"),
		member("a", "running", "node1", "198.18.0.1"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("members mismatch (-want +got):\n%s", diff)
	}
}

func mustSelector(t *testing.T, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	out, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("selector: %v", err)
	}
	return out
}

func TestGroupNames(t *testing.T) {
	expr := func(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: reqs}
	}
	in := func(k string, v ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: v}
	}
	a := groupName(t, "ns", expr(in("x", "1", "2"), in("y", "3")), nil)
	b := groupName(t, "ns", expr(in("y", "3"), in("x", "2", "1")), nil)
	if a != b {
		t.Errorf("equal selectors written differently got different names %s and %s", a, b)
	}
	distinct := map[string]string{
		"same selector, other namespace": groupName(t, "other", expr(in("x", "1", "2"), in("y", "3")), nil),
		"namespace selector {}":          groupName(t, "ns", expr(in("x", "1", "2"), in("y", "3")), sel()),
		"namespace selector with labels": groupName(t, "ns", expr(in("x", "1", "2"), in("y", "3")), sel("team", "y")),
		"all pods in the namespace":      groupName(t, "ns", sel(), nil),
		"all pods in all namespaces":     groupName(t, "ns", nil, sel()),
		"all pods in all namespaces (2)": groupName(t, "ns", sel(), sel()),
		"different values of a selector": groupName(t, "ns", expr(in("x", "1"), in("y", "3")), nil),
	}
	seen := map[string]string{a: "original"}
	for what, name := range distinct {
		if what == "all pods in all namespaces (2)" {
			if name != distinct["all pods in all namespaces"] {
				t.Errorf("nil and {} podSelector with a namespaceSelector should share a group")
			}
			continue
		}
		if other, ok := seen[name]; ok {
			t.Errorf("%s and %s share the name %s", what, other, name)
		}
		seen[name] = what
	}
}

func TestNodeState(t *testing.T) {
	web1 := pod("a", "web1", "node1", "198.18.0.1", map[string]string{"app": "web"})
	web2 := pod("a", "web2", "node2", "198.18.0.2", map[string]string{"app": "web"})
	db := pod("a", "db", "node2", "198.18.0.3", map[string]string{"app": "db"})
	m := Compute(Inputs{
		Pods: []*corev1.Pod{web1, web2, db},
		NetworkPolicies: []*networkingv1.NetworkPolicy{
			policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}}}}
			}),
			policy("a", "db", sel("app", "db"), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}
			}),
			policy("a", "nobody", sel("app", "none"), nil),
		},
	})
	webG := groupName(t, "a", sel("app", "web"), nil)
	dbG := groupName(t, "a", sel("app", "db"), nil)
	nobodyG := groupName(t, "a", sel("app", "none"), nil)
	if _, ok := m.AppliedToGroups[nobodyG]; !ok {
		t.Fatalf("the empty AppliedToGroup %s is missing from the model", nobodyG)
	}
	web1M := member("a", "web1", "node1", "198.18.0.1")
	web2M := member("a", "web2", "node2", "198.18.0.2")
	dbM := member("a", "db", "node2", "198.18.0.3")
	dbPeer, web1Peer, web2Peer := peer(dbM, false), peer(web1M, false), peer(web2M, false)

	tests := []struct {
		node string
		want *cp.NodeState
	}{
		{
			node: "node1",
			want: &cp.NodeState{
				Policies:        map[string]*cp.NetworkPolicy{"uid-web": m.Policies["uid-web"]},
				AppliedToGroups: map[string]*cp.AppliedToGroup{webG: {Name: webG, Members: []cp.GroupMember{web1M}}},
				AddressGroups:   map[string]*cp.AddressGroup{dbG: {Name: dbG, Members: []cp.GroupMember{dbPeer}}},
			},
		},
		{
			node: "node2",
			want: &cp.NodeState{
				Policies: map[string]*cp.NetworkPolicy{"uid-web": m.Policies["uid-web"], "uid-db": m.Policies["uid-db"]},
				AppliedToGroups: map[string]*cp.AppliedToGroup{
					webG: {Name: webG, Members: []cp.GroupMember{web2M}},
					dbG:  {Name: dbG, Members: []cp.GroupMember{dbM}},
				},
				AddressGroups: map[string]*cp.AddressGroup{
					dbG:  {Name: dbG, Members: []cp.GroupMember{dbPeer}},
					webG: {Name: webG, Members: []cp.GroupMember{web1Peer, web2Peer}},
				},
			},
		},
		{node: "node3", want: cp.NewNodeState()},
	}
	for _, tt := range tests {
		t.Run(tt.node, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, m.NodeState(tt.node)); diff != "" {
				t.Errorf("NodeState(%s) mismatch (-want +got):\n%s", tt.node, diff)
			}
		})
	}
}

// TestSelectorOperators checks every matchExpressions operator, alone and
// ANDed with matchLabels, on pods and namespaces.
func TestSelectorOperators(t *testing.T) {
	pods := []*corev1.Pod{
		pod("a", "web-prod", "node1", "198.18.0.1", map[string]string{"app": "web", "env": "prod"}),
		pod("a", "web-dev", "node1", "198.18.0.2", map[string]string{"app": "web", "env": "dev"}),
		pod("a", "db", "node1", "198.18.0.3", map[string]string{"app": "db"}),
		pod("a", "bare", "node1", "198.18.0.4", nil),
		pod("b", "web-b", "node1", "198.18.0.5", map[string]string{"app": "web"}),
	}
	namespaces := []*corev1.Namespace{namespace("a", map[string]string{"team": "x"}), namespace("b", nil)}
	req := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	tests := []struct {
		name     string
		pods, ns *metav1.LabelSelector
		want     []string
	}{
		{"In", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("env", metav1.LabelSelectorOpIn, "prod", "dev")}}, nil,
			[]string{"a/web-dev", "a/web-prod"}},
		{"NotIn also selects pods without the key", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("env", metav1.LabelSelectorOpNotIn, "prod")}}, nil,
			[]string{"a/bare", "a/db", "a/web-dev"}},
		{"Exists", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("env", metav1.LabelSelectorOpExists)}}, nil,
			[]string{"a/web-dev", "a/web-prod"}},
		{"DoesNotExist", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("app", metav1.LabelSelectorOpDoesNotExist)}}, nil,
			[]string{"a/bare"}},
		{"matchLabels AND matchExpressions", &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"},
			MatchExpressions: []metav1.LabelSelectorRequirement{req("env", metav1.LabelSelectorOpNotIn, "prod")}}, nil,
			[]string{"a/web-dev"}},
		{"namespace DoesNotExist selects unlabeled namespaces", sel("app", "web"),
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("team", metav1.LabelSelectorOpDoesNotExist)}},
			[]string{"b/web-b"}},
		{"namespace In", sel("app", "web"),
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("team", metav1.LabelSelectorOpIn, "x")}},
			[]string{"a/web-dev", "a/web-prod"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := policy("a", "p", sel(), func(s *networkingv1.NetworkPolicySpec) {
				s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: tt.pods, NamespaceSelector: tt.ns}}}}
			})
			m := Compute(Inputs{Pods: pods, Namespaces: namespaces, NetworkPolicies: []*networkingv1.NetworkPolicy{np}})
			if len(m.Errors) > 0 {
				t.Fatalf("errors: %v", m.Errors)
			}
			g := m.AddressGroups[groupName(t, "a", tt.pods, tt.ns)]
			var got []string
			for _, mem := range g.Members {
				got = append(got, mem.Key())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPolicySemantics covers egress isolation, allow-all and the union of
// several policies on one pod, as each node sees them.
func TestPolicySemantics(t *testing.T) {
	web := pod("a", "web", "node1", "198.18.0.1", map[string]string{"app": "web"})
	db := pod("a", "db", "node2", "198.18.0.2", map[string]string{"app": "db"})
	webG := groupName(t, "a", sel("app", "web"), nil)
	allG := groupName(t, "a", sel(), nil)
	dbG := groupName(t, "a", sel("app", "db"), nil)
	webM, dbM := member("a", "web", "node1", "198.18.0.1"), member("a", "db", "node2", "198.18.0.2")
	ref := func(name string) cp.NetworkPolicyReference {
		return cp.NetworkPolicyReference{Type: SourceTypeK8sNetworkPolicy, Namespace: "a", Name: name, UID: "uid-" + name}
	}
	tests := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		node1    *cp.NodeState
	}{
		{
			name: "egress default deny: policyTypes Egress without rules",
			policies: []*networkingv1.NetworkPolicy{policy("a", "deny", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			})},
			node1: &cp.NodeState{
				Policies: map[string]*cp.NetworkPolicy{"uid-deny": {Name: "uid-deny", SourceRef: ref("deny"),
					AppliedToGroups: []string{webG}, PolicyTypes: []string{"Egress"}}},
				AppliedToGroups: map[string]*cp.AppliedToGroup{webG: {Name: webG, Members: []cp.GroupMember{webM}}},
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "egress allow-all: one empty egress rule",
			policies: []*networkingv1.NetworkPolicy{policy("a", "all", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
				s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
				s.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
			})},
			node1: &cp.NodeState{
				Policies: map[string]*cp.NetworkPolicy{"uid-all": {Name: "uid-all", SourceRef: ref("all"),
					Rules: []cp.Rule{{Direction: cp.DirectionOut}}, AppliedToGroups: []string{webG}, PolicyTypes: []string{"Ingress", "Egress"}}},
				AppliedToGroups: map[string]*cp.AppliedToGroup{webG: {Name: webG, Members: []cp.GroupMember{webM}}},
				AddressGroups:   map[string]*cp.AddressGroup{},
			},
		},
		{
			name: "two policies on one pod: the node gets both (their union is enforced)",
			policies: []*networkingv1.NetworkPolicy{
				policy("a", "deny-all", sel(), nil),
				policy("a", "web-from-db", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
					s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}}}}
				}),
			},
			node1: &cp.NodeState{
				Policies: map[string]*cp.NetworkPolicy{
					"uid-deny-all": {Name: "uid-deny-all", SourceRef: ref("deny-all"), AppliedToGroups: []string{allG}, PolicyTypes: []string{"Ingress"}},
					"uid-web-from-db": {Name: "uid-web-from-db", SourceRef: ref("web-from-db"), AppliedToGroups: []string{webG}, PolicyTypes: []string{"Ingress"},
						Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{dbG}}}}},
				},
				AppliedToGroups: map[string]*cp.AppliedToGroup{
					allG: {Name: allG, Members: []cp.GroupMember{webM}},
					webG: {Name: webG, Members: []cp.GroupMember{webM}},
				},
				AddressGroups: map[string]*cp.AddressGroup{dbG: {Name: dbG, Members: []cp.GroupMember{peer(dbM, false)}}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Compute(Inputs{Pods: []*corev1.Pod{web, db}, NetworkPolicies: tt.policies})
			if len(m.Errors) > 0 {
				t.Fatalf("errors: %v", m.Errors)
			}
			if diff := cmp.Diff(tt.node1, m.NodeState("node1")); diff != "" {
				t.Errorf("NodeState(node1) (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInvalidPolicies checks that every invalid spec is refused with an
// error naming the problem, and leaves nothing in the model.
func TestInvalidPolicies(t *testing.T) {
	ingress := func(r networkingv1.NetworkPolicyIngressRule) func(*networkingv1.NetworkPolicySpec) {
		return func(s *networkingv1.NetworkPolicySpec) { s.Ingress = []networkingv1.NetworkPolicyIngressRule{r} }
	}
	port := func(p networkingv1.NetworkPolicyPort) func(*networkingv1.NetworkPolicySpec) {
		return ingress(networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{p}})
	}
	peer := func(p networkingv1.NetworkPolicyPeer) func(*networkingv1.NetworkPolicySpec) {
		return ingress(networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{p}})
	}
	tests := []struct {
		name    string
		spec    func(*networkingv1.NetworkPolicySpec)
		wantErr string
	}{
		{"port 0", port(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(0))}), "port 0 out of range"},
		{"unknown protocol", port(networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.Protocol("ICMP"))}), `unsupported protocol "ICMP"`},
		{"endPort below port", port(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(90)), EndPort: ptr[int32](80)}), "endPort 80 must be between port 90 and 65535"},
		{"empty named port", port(networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromString(""))}), "empty named port"},
		{"empty peer", peer(networkingv1.NetworkPolicyPeer{}), "one of podSelector, namespaceSelector or ipBlock is required"},
		{"ipBlock with a selector", peer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/16"}, PodSelector: sel()}), "ipBlock cannot be combined"},
		{"bad cidr", peer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/33"}}), `invalid cidr "198.18.0.0/33"`},
		{"except outside the cidr", peer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/24", Except: []string{"198.19.0.0/25"}}}), `except "198.19.0.0/25" is not within`},
		{"except wider than the cidr", peer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/24", Except: []string{"198.18.0.0/16"}}}), `except "198.18.0.0/16" is not within`},
		{"unknown policyType", func(s *networkingv1.NetworkPolicySpec) { s.PolicyTypes = []networkingv1.PolicyType{"Sideways"} }, `unknown policyType "Sideways"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Compute(Inputs{NetworkPolicies: []*networkingv1.NetworkPolicy{policy("a", "bad", sel(), tt.spec)}})
			err := m.Errors["a/bad"]
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if len(m.Policies)+len(m.AppliedToGroups)+len(m.AddressGroups) != 0 {
				t.Errorf("an invalid policy left objects in the model: %+v", m)
			}
		})
	}
}

// TestAddressGroupPorts checks the form of AddressGroup members in a node's
// span: never their node, and their ports only while some egress rule with
// a named port has the group as a peer.
func TestAddressGroupPorts(t *testing.T) {
	web := pod("a", "web", "node1", "198.18.0.10", map[string]string{"app": "web"},
		withPorts(corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
	client := pod("a", "client", "node2", "198.18.0.11", map[string]string{"app": "client"})
	webM := member("a", "web", "node1", "198.18.0.10", cp.NamedPort{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP})
	webG := groupName(t, "a", sel("app", "web"), nil)
	ingressNamed := policy("a", "in", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
		}}
	})
	egressNumeric := policy("a", "out-numeric", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(8080))}},
		}}
	})
	egressNamed := policy("a", "out-named", sel("app", "client"), func(s *networkingv1.NetworkPolicySpec) {
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
		}}
	})
	tests := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		want     cp.GroupMember
	}{
		{"ingress with a named port: no ports", []*networkingv1.NetworkPolicy{ingressNamed}, peer(webM, false)},
		{"egress with a numeric port: no ports", []*networkingv1.NetworkPolicy{ingressNamed, egressNumeric}, peer(webM, false)},
		{"egress with a named port: ports", []*networkingv1.NetworkPolicy{ingressNamed, egressNamed}, peer(webM, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Compute(Inputs{Pods: []*corev1.Pod{web, client}, NetworkPolicies: tt.policies})
			ag := m.NodeState("node2").AddressGroups[webG]
			if ag == nil {
				t.Fatalf("node2 did not get the AddressGroup %s", webG)
			}
			if diff := cmp.Diff([]cp.GroupMember{tt.want}, ag.Members); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEgressNamedPortToAll: a named port in an egress rule without peers is
// resolved on every destination pod, so the rule's peers become all pods
// (whose members carry their ports) plus every address for numeric ports.
func TestEgressNamedPortToAll(t *testing.T) {
	named := intstr.FromString("http")
	np := policy("a", "egress-http", sel(), func(s *networkingv1.NetworkPolicySpec) {
		s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		s.Egress = []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &named}}}}
	})
	c, err := convert(np)
	if err != nil {
		t.Fatal(err)
	}
	to := c.policy.Rules[0].To
	allPods := groupName(t, "a", sel(), &metav1.LabelSelector{})
	if !cmp.Equal(to.AddressGroups, []string{allPods}) || !cmp.Equal(to.IPBlocks, []cp.IPBlock{{CIDR: "0.0.0.0/0"}}) {
		t.Errorf("peers of an egress named-port rule without 'to' = %+v, want all pods (%s) and 0.0.0.0/0", to, allPods)
	}
	if got := namedPortPeers(c.policy); !cmp.Equal(got, []string{allPods}) {
		t.Errorf("groups that must carry named ports = %v, want [%s]", got, allPods)
	}
}

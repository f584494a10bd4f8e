package networkpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/klog/v2/ktesting"

	agentnp "palisade.dev/palisade/agent/controller/networkpolicy"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
)

var testNodes = []string{"node1", "node2", "node3"}

// replay drives a State (publishing to a Store watched by one agent Cache
// per node) with events, and checks after every step that the model, the
// store's spans and what each agent received equal Compute over the same
// objects.
type replay struct {
	t     *testing.T
	rng   *rand.Rand
	ctx   context.Context
	state *State
	store *apiserver.Store

	pods       map[string]*corev1.Pod
	namespaces map[string]*corev1.Namespace
	policies   map[string]*networkingv1.NetworkPolicy

	// Keys the controller's queues would hold.
	dirtyPolicies map[string]bool
	dirtyGroups   map[string]bool

	watchers map[string]*apiserver.Watcher // nil while the node's agent is disconnected
	caches   map[string]*agentnp.Cache
	bytes    int // JSON bytes of all events received

	// Agents disconnect at random (netRNG, so the events stay those of the
	// seed) and reconnect with their resume token.
	netRNG          *rand.Rand
	resumes, relist int
}

func newReplay(t *testing.T, seed uint64) *replay {
	_, ctx := ktesting.NewTestContext(t)
	r := &replay{
		t: t, ctx: ctx, rng: rand.New(rand.NewPCG(seed, 7)), netRNG: rand.New(rand.NewPCG(seed, 11)),
		store:         apiserver.NewStore(1 << 20),
		pods:          map[string]*corev1.Pod{},
		namespaces:    map[string]*corev1.Namespace{},
		policies:      map[string]*networkingv1.NetworkPolicy{},
		dirtyPolicies: map[string]bool{},
		dirtyGroups:   map[string]bool{},
		watchers:      map[string]*apiserver.Watcher{},
		caches:        map[string]*agentnp.Cache{},
	}
	r.state = NewState(r.store)
	r.store.SetSynced()
	for _, n := range testNodes {
		c, err := agentnp.NewCache(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.StartStream(false)
		r.caches[n] = c
		r.watchers[n] = r.store.Watch(n)
		t.Cleanup(r.watchers[n].Stop)
	}
	return r
}

func (r *replay) markGroups(names []string) {
	for _, n := range names {
		r.dirtyGroups[n] = true
	}
}

func (r *replay) setPod(p *corev1.Pod) {
	r.pods[p.Namespace+"/"+p.Name] = p
	r.markGroups(r.state.UpsertPod(p))
}

func (r *replay) deletePod(key string) {
	p := r.pods[key]
	delete(r.pods, key)
	r.markGroups(r.state.DeletePod(p.Namespace, p.Name))
}

func (r *replay) setNamespace(ns *corev1.Namespace) {
	r.namespaces[ns.Name] = ns
	r.markGroups(r.state.UpsertNamespace(ns))
}

func (r *replay) deleteNamespace(name string) {
	delete(r.namespaces, name)
	r.markGroups(r.state.DeleteNamespace(name))
}

func (r *replay) setPolicy(np *networkingv1.NetworkPolicy) {
	key := np.Namespace + "/" + np.Name
	r.policies[key] = np
	r.dirtyPolicies[key] = true
}

func (r *replay) deletePolicy(key string) {
	delete(r.policies, key)
	r.dirtyPolicies[key] = true
}

// drain syncs the queued keys in a random interleaving, as two workers
// would, reading the current objects (level-triggered).
func (r *replay) drain() {
	for len(r.dirtyPolicies)+len(r.dirtyGroups) > 0 {
		keys := append(sortedTrue(r.dirtyPolicies), sortedTrue(r.dirtyGroups)...)
		k := keys[r.rng.IntN(len(keys))]
		if r.dirtyPolicies[k] {
			delete(r.dirtyPolicies, k)
			_ = r.state.SyncPolicy(k, r.policies[k]) // errors are compared with Compute's
		} else {
			delete(r.dirtyGroups, k)
			r.state.SyncGroup(k)
		}
	}
}

func sortedTrue(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// deliver hands every pending event to the node's agent cache, through
// JSON as on the wire.
func (r *replay) deliver() {
	r.t.Helper()
	done, cancel := context.WithCancel(r.ctx)
	cancel()
	for node, w := range r.watchers {
		for {
			events, err := w.Next(done)
			if errors.Is(err, context.Canceled) {
				break
			}
			if err != nil {
				r.t.Fatalf("watch of %s: %v", node, err)
			}
			for _, ev := range events {
				data, err := json.Marshal(ev)
				if err != nil {
					r.t.Fatal(err)
				}
				r.bytes += len(data) + 1
				var wire cp.Event
				if err := json.Unmarshal(data, &wire); err != nil {
					r.t.Fatal(err)
				}
				if err := r.caches[node].Handle(wire); err != nil {
					r.t.Fatalf("%s: agent refused %s %s %s: %v", node, ev.Type, ev.Kind, ev.Name, err)
				}
			}
		}
	}
}

// check compares everything with Compute.
func (r *replay) check(step string) {
	r.t.Helper()
	in := Inputs{}
	for _, k := range sortedKeysOf(r.pods) {
		in.Pods = append(in.Pods, r.pods[k])
	}
	for _, k := range sortedKeysOf(r.namespaces) {
		in.Namespaces = append(in.Namespaces, r.namespaces[k])
	}
	for _, k := range sortedKeysOf(r.policies) {
		in.NetworkPolicies = append(in.NetworkPolicies, r.policies[k])
	}
	want := Compute(in)
	got := r.state.Model()
	if diff := cmp.Diff(sortedKeysOf(want.Errors), sortedKeysOf(got.Errors)); diff != "" {
		r.t.Fatalf("%s: invalid policies differ (-Compute +State):\n%s", step, diff)
	}
	want.Errors, got.Errors = nil, nil
	if diff := cmp.Diff(want, got); diff != "" {
		r.t.Fatalf("%s: State differs from Compute (-Compute +State):\n%s", step, diff)
	}
	for _, node := range testNodes {
		wantNode := want.NodeState(node)
		if diff := cmp.Diff(wantNode, r.store.NodeState(node)); diff != "" {
			r.t.Fatalf("%s: store's span of %s differs (-Compute +Store):\n%s", step, node, diff)
		}
		r.caches[node].Handle(cp.Event{Type: cp.Bookmark}) // ends the first list; no-op after
		if diff := cmp.Diff(wantNode, r.caches[node].Snapshot(), cmpopts.EquateEmpty()); diff != "" {
			r.t.Fatalf("%s: what %s's agent received differs (-Compute +agent):\n%s", step, node, diff)
		}
	}
}

func (r *replay) step(what string) {
	r.t.Helper()
	r.disconnect()
	r.drain()
	r.reconnect()
	r.deliver()
	r.check(what)
}

// disconnect stops the watches of some agents, at random.
func (r *replay) disconnect() {
	for _, node := range testNodes {
		if r.netRNG.IntN(8) == 0 {
			r.watchers[node].Stop()
			r.watchers[node] = nil
		}
	}
}

// reconnect resumes the disconnected agents' watches from their tokens.
func (r *replay) reconnect() {
	for _, node := range testNodes {
		if r.watchers[node] != nil {
			continue
		}
		w, resumed := r.store.Resume(node, r.caches[node].ResumeToken())
		r.t.Cleanup(w.Stop)
		r.watchers[node] = w
		r.caches[node].StartStream(resumed)
		if resumed {
			r.resumes++
		} else {
			r.relist++
		}
	}
}

func sortedKeysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The random universe: few names, so events collide and groups are shared.
var (
	randomNamespaces = []string{"ns-a", "ns-b", "ns-c"}
	randomPodNames   = []string{"p0", "p1", "p2", "p3", "p4"}
	randomPolicies   = []string{"np0", "np1", "np2"}
)

func (r *replay) pick(options ...string) string { return options[r.rng.IntN(len(options))] }

func (r *replay) randomLabels(keys map[string][]string) map[string]string {
	out := map[string]string{}
	for _, k := range sortedKeysOf(keys) {
		if r.rng.IntN(3) > 0 {
			out[k] = r.pick(keys[k]...)
		}
	}
	return out
}

func (r *replay) randomPod() *corev1.Pod {
	ns, name := r.pick(randomNamespaces...), r.pick(randomPodNames...)
	ip := fmt.Sprintf("198.18.%d.%d", r.rng.IntN(3), 10+r.rng.IntN(5))
	if r.rng.IntN(8) == 0 {
		ip = "" // no IP yet
	}
	p := pod(ns, name, r.pick(testNodes...), ip, r.randomLabels(map[string][]string{"app": {"web", "db"}, "tier": {"fe", "be"}}))
	switch r.rng.IntN(10) {
	case 0:
		p.Spec.HostNetwork = true
	case 1:
		p.Status.Phase = corev1.PodSucceeded
	}
	if r.rng.IntN(2) == 0 {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: int32(8080 + r.rng.IntN(2))}}
	}
	return p
}

func (r *replay) randomSelector() *metav1.LabelSelector {
	switch r.rng.IntN(7) {
	case 0:
		return sel()
	case 1:
		return sel("app", r.pick("web", "db"))
	case 2:
		return sel("app", "web", "tier", r.pick("fe", "be"))
	case 3:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "db"}}}}
	case 4:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"fe"}}}}
	case 5:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpDoesNotExist}}}
	}
}

func (r *replay) randomNamespaceSelector() *metav1.LabelSelector {
	switch r.rng.IntN(3) {
	case 0:
		return sel()
	case 1:
		return sel("team", r.pick("x", "y"))
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: metav1.LabelSelectorOpExists}}}
	}
}

func (r *replay) randomPeers() []networkingv1.NetworkPolicyPeer {
	var peers []networkingv1.NetworkPolicyPeer
	for range r.rng.IntN(3) {
		switch r.rng.IntN(4) {
		case 0:
			peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: r.randomSelector()})
		case 1:
			peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: r.randomNamespaceSelector()})
		case 2:
			peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: r.randomSelector(), NamespaceSelector: r.randomNamespaceSelector()})
		default:
			peers = append(peers, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/16", Except: []string{"198.18.1.0/24"}}})
		}
	}
	return peers
}

func (r *replay) randomPorts() []networkingv1.NetworkPolicyPort {
	var ports []networkingv1.NetworkPolicyPort
	for range r.rng.IntN(3) {
		switch r.rng.IntN(4) {
		case 0:
			ports = append(ports, networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(80))})
		case 1:
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolUDP), Port: ptr(intstr.FromString("http"))})
		case 2:
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolSCTP), Port: ptr(intstr.FromInt32(7000)), EndPort: ptr[int32](7010)})
		default:
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: ptr(corev1.ProtocolTCP)})
		}
	}
	return ports
}

func (r *replay) randomPolicy() *networkingv1.NetworkPolicy {
	ns, name := r.pick(randomNamespaces...), r.pick(randomPolicies...)
	np := policy(ns, name, r.randomSelector(), func(s *networkingv1.NetworkPolicySpec) {
		for range r.rng.IntN(3) {
			s.Ingress = append(s.Ingress, networkingv1.NetworkPolicyIngressRule{From: r.randomPeers(), Ports: r.randomPorts()})
		}
		for range r.rng.IntN(2) {
			s.Egress = append(s.Egress, networkingv1.NetworkPolicyEgressRule{To: r.randomPeers(), Ports: r.randomPorts()})
		}
		switch r.rng.IntN(4) {
		case 0:
			s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		case 1:
			s.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		}
	})
	if r.rng.IntN(4) == 0 {
		np.UID = types.UID(fmt.Sprintf("uid-%s-%s-%d", ns, name, r.rng.IntN(2))) // recreated
	} else {
		np.UID = types.UID("uid-" + ns + "-" + name)
	}
	if r.rng.IntN(15) == 0 {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http")), EndPort: ptr[int32](90)}}, // invalid
		})
	}
	return np
}

// randomEvent applies one random change.
func (r *replay) randomEvent() string {
	switch n := r.rng.IntN(100); {
	case n < 40:
		p := r.randomPod()
		r.setPod(p)
		return "set pod " + p.Namespace + "/" + p.Name
	case n < 50 && len(r.pods) > 0:
		k := r.pick(sortedKeysOf(r.pods)...)
		r.deletePod(k)
		return "delete pod " + k
	case n < 62:
		ns := namespace(r.pick(randomNamespaces...), r.randomLabels(map[string][]string{"team": {"x", "y"}, "env": {"prod"}}))
		r.setNamespace(ns)
		return "set namespace " + ns.Name
	case n < 67 && len(r.namespaces) > 0:
		name := r.pick(sortedKeysOf(r.namespaces)...)
		r.deleteNamespace(name)
		return "delete namespace " + name
	case n < 90:
		np := r.randomPolicy()
		r.setPolicy(np)
		return "set policy " + np.Namespace + "/" + np.Name
	case len(r.policies) > 0:
		k := r.pick(sortedKeysOf(r.policies)...)
		r.deletePolicy(k)
		return "delete policy " + k
	}
	return "nothing"
}

// TestIncrementalMatchesCompute replays random event sequences: after
// every step (one event, or a burst of events whose keys coalesce in the
// queues) the incremental model, each node's span in the store and what
// each node's agent received over the watch must equal Compute.
func TestIncrementalMatchesCompute(t *testing.T) {
	for seed := range uint64(30) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			r := newReplay(t, seed)
			for i := range 150 {
				burst := 1
				if r.rng.IntN(5) == 0 {
					burst = 2 + r.rng.IntN(6)
				}
				var what []string
				for range burst {
					what = append(what, r.randomEvent())
				}
				r.step(fmt.Sprintf("step %d (%s)", i, strings.Join(what, ", ")))
			}
			if r.resumes == 0 {
				t.Errorf("no agent resumed a watch (%d re-lists)", r.relist)
			}
		})
	}
}

// TestIncrementalRecorded replays a written sequence that walks through
// every kind of change the issue names.
func TestIncrementalRecorded(t *testing.T) {
	r := newReplay(t, 1)
	webSel, dbSel := sel("app", "web"), sel("app", "db")
	r.setNamespace(namespace("a", map[string]string{"team": "x"}))
	r.setNamespace(namespace("b", map[string]string{"team": "y"}))
	r.setPod(pod("a", "web1", "node1", "198.18.0.1", map[string]string{"app": "web"},
		withPorts(corev1.ContainerPort{Name: "http", ContainerPort: 8080})))
	r.setPod(pod("a", "web2", "node2", "198.18.0.2", map[string]string{"app": "web"}))
	r.setPod(pod("a", "db1", "node2", "198.18.0.3", map[string]string{"app": "db"}))
	r.setPod(pod("b", "client", "node3", "198.18.1.1", map[string]string{"app": "client"}))
	r.step("pods and namespaces, no policies")

	r.setPolicy(policy("a", "db", dbSel, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: webSel}}}}
	}))
	r.step("db allows web")
	r.setPolicy(policy("a", "web", webSel, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "y")}, {PodSelector: dbSel}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
		}}
	}))
	r.step("web allows team y and db on http: the web group is both applied-to and address group")

	r.setPod(pod("a", "web2", "node2", "198.18.0.2", map[string]string{"app": "db"}))
	r.step("web2 relabeled to db: leaves the web group, joins the db group")
	r.setPod(pod("a", "web1", "node1", "198.18.0.9", map[string]string{"app": "web"},
		withPorts(corev1.ContainerPort{Name: "http", ContainerPort: 8080})))
	r.step("web1's IP changes")
	r.setPod(pod("a", "web1", "node1", "", map[string]string{"app": "web"}))
	r.step("web1 loses its IP: no member anywhere, node1 leaves the span")
	r.setPod(pod("a", "web3", "node3", "198.18.0.4", map[string]string{"app": "web"}))
	r.step("web3 on node3")
	r.setNamespace(namespace("b", map[string]string{"team": "x"}))
	r.step("namespace b relabeled: client leaves the team=y group")
	r.setNamespace(namespace("a", map[string]string{"team": "y"}))
	r.step("namespace a relabeled: a's pods join the team=y group")
	r.deleteNamespace("a")
	r.step("namespace a deleted (its pods remain until deleted)")
	r.deletePod("a/db1")
	r.step("db1 deleted")

	recreated := policy("a", "web", webSel, nil)
	recreated.UID = "uid-web-2"
	r.setPolicy(recreated)
	r.step("web recreated with a new UID and no rules: its address groups are collected")
	r.setPolicy(policy("a", "db", sel("app", "none"), nil))
	r.step("db's selector changes to select nothing: its old groups are collected")
	r.deletePolicy("a/db")
	r.deletePolicy("a/web")
	r.step("every policy deleted")
	if st := r.state.Stats(); st.Groups != 0 || st.Index.Selectors != 0 {
		t.Errorf("after every policy was deleted: %+v, want no groups or selectors left", st)
	}
}

// TestLabelChangeTouchesOnlyAffectedGroups checks the work a pod event
// causes: only the groups selecting the pod's old or new label set are
// dirtied, and a namespace change dirties only the cluster-scoped groups
// whose selection of it changed.
func TestLabelChangeTouchesOnlyAffectedGroups(t *testing.T) {
	r := newReplay(t, 1)
	r.setNamespace(namespace("a", map[string]string{"team": "x"}))
	r.setPod(pod("a", "p", "node1", "198.18.0.1", map[string]string{"app": "web"}))
	all, web, db, other := sel(), sel("app", "web"), sel("app", "db"), sel("app", "other")
	for i, s := range []*metav1.LabelSelector{all, web, db, other} {
		r.setPolicy(policy("a", fmt.Sprintf("p%d", i), s, nil))
	}
	r.setPolicy(policy("a", "peers", other, func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: sel("team", "x")}, {NamespaceSelector: sel("team", "y")},
		}}}
	}))
	r.step("setup")
	name := func(s, ns *metav1.LabelSelector) string { return groupName(t, "a", s, ns) }
	tests := []struct {
		what  string
		event func() []string
		want  []string
	}{
		{"same labels, same member", func() []string {
			return r.state.UpsertPod(pod("a", "p", "node1", "198.18.0.1", map[string]string{"app": "web"}))
		}, nil},
		{"IP change", func() []string {
			return r.state.UpsertPod(pod("a", "p", "node1", "198.18.0.2", map[string]string{"app": "web"}))
		}, []string{name(all, nil), name(web, nil), name(nil, sel("team", "x"))}},
		{"label change web -> db", func() []string {
			return r.state.UpsertPod(pod("a", "p", "node1", "198.18.0.2", map[string]string{"app": "db"}))
		}, []string{name(all, nil), name(web, nil), name(db, nil), name(nil, sel("team", "x"))}},
		{"namespace team x -> y", func() []string {
			return r.state.UpsertNamespace(namespace("a", map[string]string{"team": "y"}))
		}, []string{name(nil, sel("team", "x")), name(nil, sel("team", "y"))}},
		{"namespace label that no selector reads", func() []string {
			return r.state.UpsertNamespace(namespace("a", map[string]string{"team": "y", "owner": "me"}))
		}, nil},
	}
	for _, tt := range tests {
		got := tt.event()
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: dirtied groups (-want +got):\n%s", tt.what, diff)
		}
		r.markGroups(got)
	}
	// The events above went to State directly; the store must still agree.
	r.pods["a/p"] = pod("a", "p", "node1", "198.18.0.2", map[string]string{"app": "db"})
	r.namespaces["a"] = namespace("a", map[string]string{"team": "y", "owner": "me"})
	r.step("after the events")
}

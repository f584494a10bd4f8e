package networkpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"palisade.dev/palisade/controller/apiserver"
)

// Scale benchmarks of the incremental model and the store's spans. Run:
//
//	go test -run '^$' -bench . -benchtime 1x ./controller/networkpolicy/
//
// Each reports, besides ns/op, custom metrics: peak and retained heap, and
// for the label change the bytes each agent receives.

// benchIP is the i-th address of 198.18.0.0/15.
func benchIP(i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+i>>16&1, i>>8&0xff, i&0xff)
}

func benchPod(ns, name, node string, ip int, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID(ns + "/" + name)},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "app", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: benchIP(ip), PodIPs: []corev1.PodIP{{IP: benchIP(ip)}}},
	}
}

func benchPolicy(ns, name string, podSelector *metav1.LabelSelector, from []networkingv1.NetworkPolicyPeer, port int32) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *podSelector,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if from != nil {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  from,
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(port))}},
		}}
	}
	return np
}

// build feeds the inputs into a new State publishing to a new Store, as the
// controller's start does, and returns them.
func build(b *testing.B, in Inputs) (*State, *apiserver.Store) {
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	s := NewState(store)
	for _, ns := range in.Namespaces {
		s.UpsertNamespace(ns)
	}
	for _, p := range in.Pods {
		s.UpsertPod(p)
	}
	for _, np := range in.NetworkPolicies {
		if err := s.SyncPolicy(np.Namespace+"/"+np.Name, np); err != nil {
			b.Fatal(err)
		}
	}
	store.SetSynced()
	return s, store
}

// heapSampler records the largest live heap while it runs.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapSampler() *heapSampler {
	h := &heapSampler{stop: make(chan struct{}), peak: heapObjects()}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if v := heapObjects(); v > h.peak {
				h.peak = v
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	h.done.Wait()
	if v := heapObjects(); v > h.peak {
		h.peak = v
	}
	return h.peak
}

func retainedHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

const mb = 1 << 20

// benchBuild measures building the model from in: time per build, the peak
// heap during the build (inputs included), the heap the inputs alone take
// and the heap the model retains.
func benchBuild(b *testing.B, in Inputs) {
	inputs := retainedHeap()
	var peak, retained uint64
	for b.Loop() {
		runtime.GC()
		h := startHeapSampler()
		s, store := build(b, in)
		peak = max(peak, h.Stop())
		b.StopTimer()
		retained = retainedHeap()
		st := s.Stats()
		b.ReportMetric(float64(st.Groups), "groups")
		b.ReportMetric(float64(st.Index.LabelSets), "labelsets")
		runtime.KeepAlive(s)
		runtime.KeepAlive(store)
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/mb, "MB-peak-heap")
	b.ReportMetric(float64(inputs)/mb, "MB-inputs")
	b.ReportMetric(float64(retained-min(retained, inputs))/mb, "MB-model")
}

// BenchmarkManyNamespaces is scale (a): 25k namespaces with 4 pods each
// (100k pods on 1,000 nodes) and 3 policies each (75k): default deny, web
// from clients and from a monitoring namespace (one cluster-wide group
// shared by 25k policies), db from web.
func BenchmarkManyNamespaces(b *testing.B) {
	benchBuild(b, benchManyInputs())
}

func benchManyInputs() Inputs {
	const namespaces, nodes = 25000, 1000
	var in Inputs
	ip := 0
	for i := range namespaces {
		ns := fmt.Sprintf("ns-%d", i)
		labels := map[string]string{"kubernetes.io/metadata.name": ns}
		if i == 0 {
			labels["role"] = "monitoring"
		}
		in.Namespaces = append(in.Namespaces, namespace(ns, labels))
		for j, app := range []string{"web", "web", "db", "client"} {
			ip++
			in.Pods = append(in.Pods, benchPod(ns, fmt.Sprintf("%s-%d", app, j), fmt.Sprintf("node-%d", (i*4+j)%nodes), ip,
				map[string]string{"app": app}))
		}
		in.NetworkPolicies = append(in.NetworkPolicies,
			benchPolicy(ns, "default-deny", sel(), nil, 0),
			benchPolicy(ns, "web", sel("app", "web"), []networkingv1.NetworkPolicyPeer{
				{PodSelector: sel("app", "client")},
				{NamespaceSelector: sel("role", "monitoring")},
			}, 80),
			benchPolicy(ns, "db", sel("app", "db"), []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}, 5432),
		)
	}
	return in
}

// BenchmarkOneNamespace is scale (b): one namespace, 10k pods on 100 nodes,
// 10k policies each selecting all pods (podSelector {}) and allowing all
// pods of the namespace on its own port, so every policy is in every node's
// span and shares one group.
func BenchmarkOneNamespace(b *testing.B) {
	const pods, policies, nodes = 10000, 10000, 100
	in := Inputs{Namespaces: []*corev1.Namespace{namespace("big", nil)}}
	for i := range pods {
		in.Pods = append(in.Pods, benchPod("big", fmt.Sprintf("pod-%d", i), fmt.Sprintf("node-%d", i%nodes), i+1,
			map[string]string{"app": fmt.Sprintf("app-%d", i%100), "pod": fmt.Sprint(i)}))
	}
	for i := range policies {
		in.NetworkPolicies = append(in.NetworkPolicies,
			benchPolicy("big", fmt.Sprintf("np-%d", i), sel(), []networkingv1.NetworkPolicyPeer{{PodSelector: sel()}}, int32(1+i%65535)))
	}
	benchBuild(b, in)
}

// BenchmarkLabelChange is scale (c): one pod of a 1,000-member AddressGroup
// changes its label (leaving the group, then coming back, alternately).
// node-db runs the pod whose policy uses the group (an interested agent);
// node-other has its own policy but not this group (uninterested). It
// reports the compute time per change (State and Store, up to the events
// queued for the watchers) and the JSON bytes each agent receives per change.
func BenchmarkLabelChange(b *testing.B) {
	const members, nodes = 1000, 50
	var in Inputs
	in.Namespaces = []*corev1.Namespace{namespace("shop", nil)}
	for i := range members {
		in.Pods = append(in.Pods, benchPod("shop", fmt.Sprintf("web-%d", i), fmt.Sprintf("node-%d", i%nodes), i+1,
			map[string]string{"app": "web"}))
	}
	in.Pods = append(in.Pods,
		benchPod("shop", "db", "node-db", members+1, map[string]string{"app": "db"}),
		benchPod("shop", "cache", "node-other", members+2, map[string]string{"app": "cache"}))
	in.NetworkPolicies = []*networkingv1.NetworkPolicy{
		benchPolicy("shop", "db", sel("app", "db"), []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}, 5432),
		benchPolicy("shop", "cache", sel("app", "cache"), []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "db")}}, 6379),
	}
	s, store := build(b, in)
	// Big buffers: the events are counted after the loop.
	interested, uninterested := store.Watch("node-db"), store.Watch("node-other")
	defer interested.Stop()
	defer uninterested.Stop()
	drain(b, interested)
	drain(b, uninterested)

	leave := benchPod("shop", "web-500", "node-0", 501, map[string]string{"app": "web-off"})
	join := benchPod("shop", "web-500", "node-0", 501, map[string]string{"app": "web"})
	var sent, sentOther sentBytes
	n := 0
	for b.Loop() {
		p := leave
		if n%2 == 1 {
			p = join
		}
		n++
		for _, g := range s.UpsertPod(p) {
			s.SyncGroup(g)
		}
		if n%200 == 0 {
			// Keep the watchers below their buffer; counted below.
			b.StopTimer()
			countInto(b, interested, &sent)
			countInto(b, uninterested, &sentOther)
			b.StartTimer()
		}
	}
	countInto(b, interested, &sent)
	countInto(b, uninterested, &sentOther)
	if sent.events != n {
		b.Fatalf("the interested agent got %d events for %d changes, want one each", sent.events, n)
	}
	if sent.maxBytes > 150 || sentOther.bytes > 0 {
		b.Errorf("issue 3's target: at most 150 B per change to the interested agent (got up to %d B), 0 to others (got %d B)",
			sent.maxBytes, sentOther.bytes)
	}
	b.ReportMetric(float64(sent.bytes)/float64(n), "B/change-interested")
	b.ReportMetric(float64(sent.maxBytes), "B-max-interested")
	b.ReportMetric(float64(sentOther.bytes)/float64(n), "B/change-uninterested")
}

// sentBytes counts events as the server writes them: JSON and a newline.
type sentBytes struct {
	events, bytes, maxBytes int
}

func countInto(tb testing.TB, w *apiserver.Watcher, into *sentBytes) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		events, err := w.Next(done)
		if errors.Is(err, context.Canceled) {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		for _, ev := range events {
			data, err := json.Marshal(ev)
			if err != nil {
				tb.Fatal(err)
			}
			into.events++
			into.bytes += len(data) + 1
			into.maxBytes = max(into.maxBytes, len(data)+1)
		}
	}
}

func drain(b testing.TB, w *apiserver.Watcher) {
	var discard sentBytes
	countInto(b, w, &discard)
}

// TestLabelChangeEvent pins the event an interested agent gets for scale
// (c), and that nobody else gets one.
func TestLabelChangeEvent(t *testing.T) {
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	s := NewState(store)
	s.UpsertNamespace(namespace("shop", nil))
	for _, p := range []*corev1.Pod{
		pod("shop", "web-1", "node-1", "198.18.0.1", map[string]string{"app": "web"}),
		pod("shop", "db", "node-db", "198.18.0.2", map[string]string{"app": "db"}),
	} {
		s.UpsertPod(p)
	}
	if err := s.SyncPolicy("shop/db", policy("shop", "db", sel("app", "db"), func(spec *networkingv1.NetworkPolicySpec) {
		spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}
	})); err != nil {
		t.Fatal(err)
	}
	store.SetSynced()
	interested, other := store.Watch("node-db"), store.Watch("node-1")
	t.Cleanup(interested.Stop)
	t.Cleanup(other.Stop)
	ctx := context.Background()
	if _, err := interested.Next(ctx); err != nil { // initial list
		t.Fatal(err)
	}
	if _, err := other.Next(ctx); err != nil {
		t.Fatal(err)
	}
	name := groupName(t, "shop", sel("app", "web"), nil)
	for _, tt := range []struct {
		app, patch string
	}{
		{"off", `{"removed":[{"pod":"shop/web-1"}]}`},
		// No node (agents need only peers' addresses), no ports (no egress
		// rule with a named port uses the group).
		{"web", `{"added":[{"pod":"shop/web-1","ips":["198.18.0.1"]}]}`},
	} {
		for _, g := range s.UpsertPod(pod("shop", "web-1", "node-1", "198.18.0.1", map[string]string{"app": tt.app}, withPorts(corev1.ContainerPort{Name: "http", ContainerPort: 80}))) {
			s.SyncGroup(g)
		}
		events, err := interested.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(events)
		want := fmt.Sprintf(`[{"type":"MODIFIED","kind":"AddressGroup","name":"%s","rv":%d,"patch":%s}]`, name, events[0].RV, tt.patch)
		if string(data) != want {
			t.Errorf("interested agent got\n%s\nwant\n%s", data, want)
		}
	}
	var got sentBytes
	countInto(t, other, &got)
	if got.events != 0 {
		t.Errorf("the uninterested agent got %d events", got.events)
	}
}

package networkpolicy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	controllernp "palisade.dev/palisade/controller/networkpolicy"
)

// recorder is a Handler that records how each stream started and how many
// events resumed streams replayed before their BOOKMARK.
type recorder struct {
	Handler

	mu       sync.Mutex
	streams  []bool // resumed, per stream
	replayed int
	inReplay bool
}

func (r *recorder) StartStream(resumed bool) {
	r.mu.Lock()
	r.streams = append(r.streams, resumed)
	r.inReplay = resumed
	r.mu.Unlock()
	r.Handler.StartStream(resumed)
}

func (r *recorder) Handle(ev cp.Event) error {
	r.mu.Lock()
	if r.inReplay {
		if ev.Type == cp.Bookmark {
			r.inReplay = false
		} else {
			r.replayed++
		}
	}
	r.mu.Unlock()
	return r.Handler.Handle(ev)
}

// counts returns the number of listed and resumed streams and of replayed
// events.
func (r *recorder) counts() (lists, resumes, replayed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, resumed := range r.streams {
		if resumed {
			resumes++
		} else {
			lists++
		}
	}
	return lists, resumes, r.replayed
}

// TestResumeEndToEnd breaks the agent's connection while the controller's
// model changes, then restarts the agent while it changes again: both times
// the agent must resume (get only the missed events, no re-list) and end
// with exactly the store's span of its node.
func TestResumeEndToEnd(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	state := controllernp.NewState(store)
	store.SetSynced()
	var down atomic.Bool // the controller refuses watches while down
	handler := apiserver.NewHandler(ctx, store, apiserver.AuthorizerFunc(func(_ context.Context, _ *http.Request, _ string) error {
		if down.Load() {
			return fmt.Errorf("down for the test")
		}
		return nil
	}))
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)

	state.UpsertNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}})
	pod := func(name, node string, ip int, app string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{NodeName: node},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("198.18.0.%d", ip)}}},
		}
	}
	setPod := func(p *corev1.Pod) {
		for _, g := range state.UpsertPod(p) {
			state.SyncGroup(g)
		}
	}
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	setPolicy := func(name, app string, from ...string) {
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, UID: types.UID("uid-" + name)},
			Spec:       networkingv1.NetworkPolicySpec{PodSelector: *sel(app)},
		}
		for _, f := range from {
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel(f)}}})
		}
		if err := state.SyncPolicy("a/"+name, np); err != nil {
			t.Fatal(err)
		}
	}
	setPod(pod("web1", "node1", 1, "web"))
	setPod(pod("web2", "node2", 2, "web"))
	setPolicy("web", "web", "client")
	for i := range 5 {
		setPod(pod(fmt.Sprintf("client%d", i), "node2", 10+i, "client"))
	}

	dir := t.TempDir()
	cache, _ := newTestCache(t, dir)
	rec := &recorder{Handler: cache}
	cfg := WatchConfig{URL: srv.URL, Node: "node1"}
	stop := startWatch(t, cfg, rec)
	converged := func(c *Cache, what string) {
		t.Helper()
		diff := func() string { return cmp.Diff(store.NodeState("node1"), c.Snapshot(), cmpopts.EquateEmpty()) }
		waitFor(t, func() bool { return c.Synced() && diff() == "" },
			func() string { return what + ": cache != store's NodeState(node1) (-store +cache):\n" + diff() })
	}
	converged(cache, "initial list")

	// Disconnect, and change the model while the agent cannot reconnect.
	down.Store(true)
	srv.CloseClientConnections()
	for i := range 5 {
		setPod(pod(fmt.Sprintf("client%d", i), "node2", 10+i, "off")) // clients leave the AddressGroup
	}
	setPod(pod("web3", "node1", 3, "web")) // a new member of node1's AppliedToGroup
	setPolicy("db", "web", "web")          // a second policy on node1
	down.Store(false)
	converged(cache, "after the disconnect")
	lists, resumes, replayed := rec.counts()
	if lists != 1 || resumes < 1 || replayed < 7 {
		t.Errorf("streams: %d lists, %d resumes, %d replayed events; want 1 list, then resumes replaying at least the 7 missed events", lists, resumes, replayed)
	}

	// Restart the agent: a new cache from the state directory resumes too.
	stop()
	setPod(pod("client0", "node2", 10, "client"))
	setPod(pod("web1", "node1", 1, "off"))
	restarted, _ := newTestCache(t, dir)
	rec2 := &recorder{Handler: restarted}
	startWatch(t, cfg, rec2)
	converged(restarted, "after the agent restarted")
	if lists, resumes, replayed := rec2.counts(); lists != 0 || resumes != 1 || replayed < 2 {
		t.Errorf("restarted agent streams: %d lists, %d resumes, %d replayed events; want one resume replaying at least 2 events", lists, resumes, replayed)
	}
}

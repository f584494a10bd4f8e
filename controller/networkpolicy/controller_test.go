package networkpolicy

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	"palisade.dev/palisade/controller/metrics"
)

// syncCount is the number of syncs of kind the sync duration histogram saw.
func syncCount(t *testing.T, kind string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := metrics.SyncDuration.WithLabelValues(kind).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// waitForNodeState waits until the store's span of node is want.
func waitForNodeState(t *testing.T, store *apiserver.Store, node string, want *cp.NodeState) {
	t.Helper()
	var diff string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if diff = cmp.Diff(want, store.NodeState(node)); diff == "" {
			return
		}
	}
	t.Fatalf("NodeState(%s) did not converge (-want +got):\n%s", node, diff)
}

func TestControllerPublishesNodeState(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)

	np := policy("a", "web", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "client")}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(80))}},
		}}
	})
	client := fake.NewClientset(
		namespace("a", nil),
		pod("a", "web", "node1", "198.18.0.1", map[string]string{"app": "web"}),
		pod("a", "client1", "node2", "198.18.0.2", map[string]string{"app": "client"}),
		np,
	)
	factory := informers.NewSharedInformerFactory(client, 0)
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	c, err := NewController(factory.Core().V1().Pods(), factory.Core().V1().Namespaces(),
		factory.Networking().V1().NetworkPolicies(), store)
	if err != nil {
		t.Fatalf("NewController: %v", err)
	}
	if c.HasSynced() {
		t.Fatal("HasSynced() before Run")
	}
	factory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	webG := groupName(t, "a", sel("app", "web"), nil)
	clientG := groupName(t, "a", sel("app", "client"), nil)
	policyWant := &cp.NetworkPolicy{
		Name:      "uid-web",
		SourceRef: cp.NetworkPolicyReference{Type: SourceTypeK8sNetworkPolicy, Namespace: "a", Name: "web", UID: "uid-web"},
		Rules: []cp.Rule{{
			Direction: cp.DirectionIn,
			From:      cp.Peer{AddressGroups: []string{clientG}},
			Services:  []cp.Service{tcp("80")},
		}},
		AppliedToGroups: []string{webG},
		PolicyTypes:     []string{"Ingress"},
	}
	want := &cp.NodeState{
		Policies:        map[string]*cp.NetworkPolicy{"uid-web": policyWant},
		AppliedToGroups: map[string]*cp.AppliedToGroup{webG: {Name: webG, Members: []cp.GroupMember{member("a", "web", "node1", "198.18.0.1")}}},
		AddressGroups:   map[string]*cp.AddressGroup{clientG: {Name: clientG, Members: []cp.GroupMember{peer(member("a", "client1", "node2", "198.18.0.2"), false)}}},
	}
	waitForNodeState(t, store, "node1", want)
	waitForNodeState(t, store, "node2", cp.NewNodeState())
	if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return c.HasSynced(), nil }); err != nil {
		t.Fatalf("HasSynced() stays false after the model is published: %v", err)
	}
	groupSyncs := syncCount(t, metrics.SyncGroup)

	// A new client pod must show up in the AddressGroup.
	newPod := pod("a", "client2", "node3", "198.18.0.3", map[string]string{"app": "client"})
	if _, err := client.CoreV1().Pods("a").Create(ctx, newPod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	want.AddressGroups[clientG].Members = append(want.AddressGroups[clientG].Members, peer(member("a", "client2", "node3", "198.18.0.3"), false))
	waitForNodeState(t, store, "node1", want)
	if n := syncCount(t, metrics.SyncGroup); n <= groupSyncs {
		t.Errorf("group syncs observed = %d, want more than %d after a pod was added", n, groupSyncs)
	}

	// client1 changes its labels: it leaves the AddressGroup.
	relabeled := pod("a", "client1", "node2", "198.18.0.2", map[string]string{"app": "other"})
	if _, err := client.CoreV1().Pods("a").Update(ctx, relabeled, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating pod: %v", err)
	}
	want.AddressGroups[clientG].Members = want.AddressGroups[clientG].Members[1:]
	waitForNodeState(t, store, "node1", want)

	// An invalid policy is skipped; the rest keeps working.
	bad := policy("a", "bad", sel("app", "web"), func(s *networkingv1.NetworkPolicySpec) {
		s.Ingress = []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(0))}}}}
	})
	if _, err := client.NetworkingV1().NetworkPolicies("a").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating policy: %v", err)
	}

	// Deleting the policy empties node1's span.
	if err := client.NetworkingV1().NetworkPolicies("a").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting policy: %v", err)
	}
	waitForNodeState(t, store, "node1", cp.NewNodeState())
}

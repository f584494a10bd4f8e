package nodecontroller

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/agent/openflow"
)

var local = netip.MustParsePrefix("198.19.1.0/24")

func node(name, ip, cidr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	if cidr != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	}
	return n
}

func remote(name, ip, cidr string) openflow.RemoteNode {
	return openflow.RemoteNode{Name: name, IP: netip.MustParseAddr(ip), PodCIDR: netip.MustParsePrefix(cidr)}
}

var cmpAddrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
var cmpPrefixes = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestRemoteNodes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		nodes       []*corev1.Node
		want        []openflow.RemoteNode
		wantSkipped []string
	}{
		{
			name:  "self is not remote; sorted by name",
			nodes: []*corev1.Node{node("node3", "198.18.0.13", "198.19.3.0/24"), node("node1", "198.18.0.11", "198.19.1.0/24"), node("node2", "198.18.0.12", "198.19.2.0/24")},
			want:  []openflow.RemoteNode{remote("node2", "198.18.0.12", "198.19.2.0/24"), remote("node3", "198.18.0.13", "198.19.3.0/24")},
		},
		{
			name:        "a joining node without pod CIDR or address waits",
			nodes:       []*corev1.Node{node("node2", "198.18.0.12", ""), node("node3", "", "198.19.3.0/24")},
			want:        []openflow.RemoteNode{},
			wantSkipped: []string{"node2", "node3"},
		},
		{
			name:        "IPv6 only",
			nodes:       []*corev1.Node{node("node2", "2001:db8::2", "2001:db8:2::/64")},
			want:        []openflow.RemoteNode{},
			wantSkipped: []string{"node2"},
		},
		{
			name:        "overlapping the local pod CIDR",
			nodes:       []*corev1.Node{node("node2", "198.18.0.12", "198.19.0.0/16")},
			want:        []openflow.RemoteNode{},
			wantSkipped: []string{"node2"},
		},
		{
			name: "two nodes claiming one CIDR or one address are both left out",
			nodes: []*corev1.Node{node("node2", "198.18.0.12", "198.19.2.0/24"), node("node3", "198.18.0.13", "198.19.2.0/25"),
				node("node4", "198.18.0.14", "198.19.4.0/24"), node("node5", "198.18.0.14", "198.19.5.0/24"), node("node6", "198.18.0.16", "198.19.6.7/24")},
			want:        []openflow.RemoteNode{remote("node6", "198.18.0.16", "198.19.6.0/24")},
			wantSkipped: []string{"node2", "node3", "node4", "node5"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped := RemoteNodes("node1", local, tc.nodes)
			if diff := cmp.Diff(tc.want, got, cmpAddrs, cmpPrefixes); diff != "" {
				t.Errorf("remote nodes (-want +got):\n%s", diff)
			}
			var names []string
			for n := range skipped {
				names = append(names, n)
			}
			if !cmp.Equal(tc.wantSkipped, names, cmp.Transformer("set", func(s []string) map[string]bool {
				m := map[string]bool{}
				for _, v := range s {
					m[v] = true
				}
				return m
			})) {
				t.Errorf("skipped %v, want %v", skipped, tc.wantSkipped)
			}
		})
	}
}

// recorder is a sink that fails while failing is set.
type recorder struct {
	mu      sync.Mutex
	calls   [][]openflow.RemoteNode
	failing int
}

func (r *recorder) sink(_ context.Context, nodes []openflow.RemoteNode) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing > 0 {
		r.failing--
		return errors.New("flows refused")
	}
	r.calls = append(r.calls, nodes)
	return nil
}

func (r *recorder) waitFor(t *testing.T, want []openflow.RemoteNode) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		var last []openflow.RemoteNode
		if n := len(r.calls); n > 0 {
			last = r.calls[n-1]
		}
		r.mu.Unlock()
		if last != nil && cmp.Equal(want, last, cmpAddrs, cmpPrefixes) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink last got %v, want %v", last, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestControllerFollowsNodes(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kube := fake.NewClientset(node("node1", "198.18.0.11", "198.19.1.0/24"), node("node2", "198.18.0.12", "198.19.2.0/24"))
	r := &recorder{failing: 1} // the first sync fails and is retried
	c, err := New(kube, "node1", local, r.sink)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.waitFor(t, []openflow.RemoteNode{remote("node2", "198.18.0.12", "198.19.2.0/24")})

	t.Log("a node joins: first without a pod CIDR, then with one")
	n3 := node("node3", "198.18.0.13", "")
	if _, err := kube.CoreV1().Nodes().Create(ctx, n3, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n3.Spec.PodCIDR, n3.Spec.PodCIDRs = "198.19.3.0/24", []string{"198.19.3.0/24"}
	if _, err := kube.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, []openflow.RemoteNode{remote("node2", "198.18.0.12", "198.19.2.0/24"), remote("node3", "198.18.0.13", "198.19.3.0/24")})

	t.Log("a node changes its address, another leaves")
	n3.Status.Addresses[1].Address = "198.18.0.23"
	if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := kube.CoreV1().Nodes().Delete(ctx, "node2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, []openflow.RemoteNode{remote("node3", "198.18.0.23", "198.19.3.0/24")})

	t.Log("an update that changes nothing the flows depend on is not handed to the sink")
	r.mu.Lock()
	calls := len(r.calls)
	r.mu.Unlock()
	n3.Labels = map[string]string{"x": "y"}
	if _, err := kube.CoreV1().Nodes().Update(ctx, n3, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) != calls {
		t.Errorf("sink called %d more times for an irrelevant change", len(r.calls)-calls)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	kube := fake.NewClientset()
	if _, err := New(kube, "", local, (&recorder{}).sink); err == nil {
		t.Error("New without a node name succeeded")
	}
	if _, err := New(kube, "node1", netip.Prefix{}, (&recorder{}).sink); err == nil {
		t.Error("New without a pod CIDR succeeded")
	}
	if _, err := New(kube, "node1", local, nil); err == nil {
		t.Error("New without a sink succeeded")
	}
}

package networkpolicy

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	controllernp "palisade.dev/palisade/controller/networkpolicy"
)

// startWatch runs the watch loop with a short backoff until the test ends
// or stop is called.
func startWatch(t *testing.T, cfg WatchConfig, h Handler) (stop func()) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	w, err := newWatcher(cfg, h)
	if err != nil {
		t.Fatalf("newWatcher: %v", err)
	}
	w.backoff = wait.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 100 * time.Millisecond}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or fails the test with what().
func waitFor(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out: %s", what())
}

func TestWatchArguments(t *testing.T) {
	c, _ := newTestCache(t, "")
	tests := []struct {
		name, url, node string
		h               Handler
		wantErr         string
	}{
		{"empty node", "http://198.18.0.1:10349", "", c, "node name is empty"},
		{"nil handler", "http://198.18.0.1:10349", "n", nil, "handler is nil"},
		{"no scheme", "controller.example", "n", c, "must be http(s)://host:port"},
		{"other scheme", "ftp://198.18.0.1:10349", "n", c, "must be http(s)://host:port"},
		{"bad URL", "http://[::1", "n", c, "invalid controller URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Watch(context.Background(), WatchConfig{URL: tt.url, Node: tt.node}, tt.h)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Watch() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestWatchRetriesAndRelists serves, in turn: an error status, a stream that
// breaks in the middle of its list, and a complete stream. The cache must end
// with exactly the complete stream's state.
func TestWatchRetriesAndRelists(t *testing.T) {
	partial := []cp.Event{addAG("stale", client3), addATG("web", web1)}
	full := initialList()
	var attempts atomic.Int32
	var gotNode atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotNode.Store(r.URL.Query().Get("node"))
		if r.URL.Path != cp.WatchPath {
			http.NotFound(w, r)
			return
		}
		var events []cp.Event
		switch attempts.Add(1) {
		case 1:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		case 2:
			events = partial
		default:
			events = full
		}
		enc := json.NewEncoder(w)
		for _, ev := range events {
			if err := enc.Encode(ev); err != nil {
				return
			}
		}
		w.(http.Flusher).Flush()
		if len(events) == len(full) {
			<-r.Context().Done() // keep the complete stream open
		}
	}))
	t.Cleanup(srv.Close)

	c, changes := newTestCache(t, "")
	startWatch(t, WatchConfig{URL: srv.URL, Node: "node/1"}, c)
	waitFor(t, c.Synced, func() string { return "the cache never synced" })
	want := state([]*cp.NetworkPolicy{testPolicy("p1", "clients")},
		[]*cp.AppliedToGroup{{Name: "web", Members: []cp.GroupMember{web1}}},
		[]*cp.AddressGroup{{Name: "clients", Members: []cp.GroupMember{client1, client2}}})
	if diff := cmp.Diff(want, c.Snapshot()); diff != "" {
		t.Errorf("state mismatch (-want +got):\n%s", diff)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("server saw %d watches, want 3", n)
	}
	if n := changes.Load(); n != 1 {
		t.Errorf("OnChange called %d times, want 1", n)
	}
	if got := gotNode.Load(); got != "node/1" {
		t.Errorf("server got node %q, want %q", got, "node/1")
	}
}

// TestEndToEnd runs the controller's real model and watch server over TLS
// with token authentication: the agent's cache must equal
// Compute(...).NodeState(node) after the initial list, after changes, and
// after a reconnect that needs a rotated token.
func TestEndToEnd(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := apiserver.NewStore(apiserver.DefaultBufferSize)
	state := controllernp.NewState(store)
	store.SetSynced()
	var validToken atomic.Value
	validToken.Store("token-1")
	auth := apiserver.AuthorizerFunc(func(_ context.Context, r *http.Request, node string) error {
		if r.Header.Get("Authorization") != "Bearer "+validToken.Load().(string) || node != "node1" {
			return &apiserver.AuthError{Status: http.StatusUnauthorized, Reason: "bad token"}
		}
		return nil
	})
	srv := httptest.NewTLSServer(apiserver.NewHandler(ctx, store, auth))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile := func(path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	writeFile(tokenFile, "token-1\n")

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	pod := func(name, node, ip, app string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: ip}}},
		}
	}
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "uid-web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}},
			}},
		},
	}
	pods := map[string]*corev1.Pod{}
	setPod := func(p *corev1.Pod) {
		pods[p.Name] = p
		for _, g := range state.UpsertPod(p) {
			state.SyncGroup(g)
		}
	}
	deletePod := func(name string) {
		delete(pods, name)
		for _, g := range state.DeletePod("a", name) {
			state.SyncGroup(g)
		}
	}
	state.UpsertNamespace(ns)
	setPod(pod("web1", "node1", "198.18.0.1", "web"))
	setPod(pod("web2", "node2", "198.18.0.2", "web"))
	setPod(pod("client1", "node2", "198.18.0.11", "client"))
	if err := state.SyncPolicy("a/web", np); err != nil {
		t.Fatal(err)
	}

	c, _ := newTestCache(t, t.TempDir())
	converged := func() (bool, string) {
		in := controllernp.Inputs{Namespaces: []*corev1.Namespace{ns}, NetworkPolicies: []*networkingv1.NetworkPolicy{np}}
		for _, p := range pods {
			in.Pods = append(in.Pods, p)
		}
		diff := cmp.Diff(controllernp.Compute(in).NodeState("node1"), c.Snapshot(), cmpopts.EquateEmpty())
		return c.Synced() && diff == "", diff
	}
	check := func(what string) {
		t.Helper()
		waitFor(t, func() bool { ok, _ := converged(); return ok },
			func() string {
				_, diff := converged()
				return what + ": cache != NodeState(node1) (-want +got):\n" + diff
			})
	}

	startWatch(t, WatchConfig{URL: srv.URL, Node: "node1", Token: TokenFile(tokenFile), CA: CAFile(caFile)}, c)
	check("initial state")
	if got := len(c.Snapshot().Policies); got != 1 {
		t.Fatalf("node1 has %d policies, want 1", got)
	}

	setPod(pod("client2", "node3", "198.18.0.12", "client"))
	check("after a client pod was added")

	setPod(pod("client1", "node2", "198.18.0.13", "client"))
	check("after a client pod changed its IP")

	// Rotate the token and break the connection; changes made meanwhile
	// arrive with the re-list, which must present the new token.
	validToken.Store("token-2")
	writeFile(tokenFile, "token-2")
	srv.CloseClientConnections()
	deletePod("web1") // the policy leaves node1's span
	check("after a reconnect")
	if got := len(c.Snapshot().Policies); got != 0 {
		t.Errorf("node1 still has %d policies after its last web pod left", got)
	}
}

func TestCredentialSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		get     func() error
		wantErr string
	}{
		{"missing token file", func() error { _, err := TokenFile(filepath.Join(dir, "none"))(); return err }, "reading the controller token"},
		{"empty token file", func() error { _, err := TokenFile(filepath.Join(dir, "empty"))(); return err }, "is empty"},
		{"missing CA file", func() error { _, err := CAFile(filepath.Join(dir, "none"))(context.Background()); return err }, "reading the controller CA"},
		{"no CA ConfigMap", func() error { _, err := CAFromConfigMap(fake.NewClientset())(context.Background()); return err }, "palisade-system/palisade-ca"},
		{"CA ConfigMap without the key", func() error {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cp.CAConfigMapNamespace, Name: cp.CAConfigMapName}}
			_, err := CAFromConfigMap(fake.NewClientset(cm))(context.Background())
			return err
		}, `has no "ca.crt"`},
		{"CA without PEM", func() error {
			w, err := newWatcher(WatchConfig{URL: "https://198.18.0.1:1", Node: "n",
				CA: func(context.Context) ([]byte, error) { return []byte("garbage"), nil }}, &Cache{})
			if err != nil {
				return err
			}
			_, err = w.httpClient(context.Background())
			return err
		}, "holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.get(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: cp.CAConfigMapNamespace, Name: cp.CAConfigMapName},
		Data: map[string]string{cp.CAConfigMapKey: "PEM"}}
	if got, err := CAFromConfigMap(fake.NewClientset(cm))(context.Background()); err != nil || string(got) != "PEM" {
		t.Errorf("CAFromConfigMap = %q, %v; want the ConfigMap's CA", got, err)
	}
}

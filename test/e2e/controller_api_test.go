//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
)

// TestControllerAPI watches the controller's agent-facing API the way an
// agent does (TLS with the CA from the palisade-ca ConfigMap, a
// ServiceAccount token bound to the Node) in a 2-node lab, and checks what
// node1 receives: only the policies applied to its pods, only its own
// members of their AppliedToGroups, their AddressGroups, and then a patch
// when a peer's label changes. Another node's span, no token and a bad
// token are refused.
func TestControllerAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 2)
	kube := l.Client()

	const ns = "api"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// web-1 and client-1 on node1; web-2 and db-2 on node2.
	pods := map[string]struct{ node, app string }{
		"web-1": {"node1", "web"}, "client-1": {"node1", "client"},
		"web-2": {"node2", "web"}, "db-2": {"node2", "db"},
	}
	for name, p := range pods {
		createPinnedPod(t, ctx, kube, ns, name, p.node, map[string]string{"app": p.app})
	}
	ips := waitForPodIPs(t, ctx, kube, ns, len(pods))

	// web accepts TCP 80 from client; db accepts web.
	for _, np := range []*networkingv1.NetworkPolicy{
		podPolicy(ns, "web", "web", "client", &networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(80))}),
		podPolicy(ns, "db", "db", "web", nil),
	} {
		if _, err := kube.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	ca := controllerCA(t, ctx, kube)
	node1Token := nodeToken(t, ctx, kube, lab.AgentServiceAccountName, "node1")
	checkTokenReview(t, ctx, kube, node1Token, "node1")
	base := "https://" + net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(layout.ControllerPort))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}}}

	t.Log("node1's span: the web policy with node1's web pod only, and its client AddressGroup; not the db policy")
	w := openWatch(t, ctx, client, base, "node1", node1Token, "")
	want := spanSummary{
		Policies:        []string{ns + "/web"},
		AppliedToGroups: [][]string{{ns + "/web-1 " + ips["web-1"]}},
		AddressGroups:   [][]string{{ns + "/client-1 " + ips["client-1"]}},
	}
	// The controller may still be taking the policies in: wait for the span.
	state := w.untilSpan(t, want, 30*time.Second)

	t.Log("client-1 changes its label: node1 gets one patch that removes it, identified by pod only")
	p, err := kube.CoreV1().Pods(ns).Get(ctx, "client-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels["app"] = "other"
	if _, err := kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := w.next(t, 10*time.Second)
	wantPatch := &cp.GroupPatch{Removed: []cp.GroupMember{{Pod: cp.PodReference{Namespace: ns, Name: "client-1"}}}}
	if ev.Type != cp.Modified || ev.Kind != cp.KindAddressGroup || state.AddressGroups[ev.Name] == nil ||
		fmt.Sprint(ev.Patch) != fmt.Sprint(wantPatch) {
		t.Fatalf("after the label change node1 got %s, want a MODIFIED patch of its AddressGroup removing only %s/client-1", eventJSON(ev), ns)
	}
	t.Logf("patch event on the wire: %s (%d bytes)", eventJSON(ev), len(eventJSON(ev))+1)

	t.Log("a watch resuming from that event's token gets no list: only a BOOKMARK, then the changes")
	token := cp.FormatResumeToken(w.incarnation, ev.RV)
	resumed := openWatch(t, ctx, client, base, "node1", node1Token, token)
	if resumed.mode != cp.WatchModeResume {
		t.Fatalf("resuming from %s: mode %q, want %q", token, resumed.mode, cp.WatchModeResume)
	}
	if ev := resumed.next(t, 10*time.Second); ev.Type != cp.Bookmark {
		t.Fatalf("resumed watch got %s first, want the BOOKMARK (nothing changed since the token)", eventJSON(ev))
	}
	if p, err = kube.CoreV1().Pods(ns).Get(ctx, "client-1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Labels["app"] = "client"
	if _, err := kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantAdded := &cp.GroupPatch{Added: []cp.GroupMember{{Pod: cp.PodReference{Namespace: ns, Name: "client-1"}, IPs: []string{ips["client-1"]}}}}
	for _, w := range []*watch{w, resumed} {
		added := w.next(t, 10*time.Second)
		if added.Type != cp.Modified || added.Kind != cp.KindAddressGroup || fmt.Sprint(added.Patch) != fmt.Sprint(wantAdded) {
			t.Fatalf("after client-1 came back node1 got %s, want a MODIFIED patch adding it with its IP only", eventJSON(added))
		}
		t.Logf("addition on the wire: %s (%d bytes)", eventJSON(added), len(eventJSON(added))+1)
	}
	if stale := openWatch(t, ctx, client, base, "node1", node1Token, "another-controller.1"); stale.mode != cp.WatchModeList {
		t.Errorf("a token of another controller: mode %q, want %q", stale.mode, cp.WatchModeList)
	}

	t.Log("node1's token may not watch node2; no token and a forged token are refused")
	otherSA := "default"
	tests := []struct {
		name, node, token string
		wantStatus        int
		wantBody          string
	}{
		{"node1's token for node2", "node2", node1Token, http.StatusForbidden, `bound to node "node1"`},
		{"no token", "node1", "", http.StatusUnauthorized, "no bearer token"},
		{"forged token", "node1", "not-a-token", http.StatusUnauthorized, "the token is not valid"},
		{"another ServiceAccount's node-bound token", "node1", nodeToken(t, ctx, kube, otherSA, "node1"), http.StatusForbidden,
			`is not the agents' ServiceAccount`},
	}
	for _, tt := range tests {
		status, body := watchStatus(t, ctx, client, base, tt.node, tt.token)
		if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
			t.Errorf("%s: got %d %q, want %d containing %q", tt.name, status, body, tt.wantStatus, tt.wantBody)
		} else {
			t.Logf("%s: %d %s", tt.name, status, strings.TrimSpace(body))
		}
	}
}

func createPinnedPod(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns, name, node string, labels map[string]string) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "server", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
	}
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitForPodIPs waits until n pods of ns run with an IP and returns the IPs
// by pod name.
func waitForPodIPs(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns string, n int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ips := map[string]string{}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				ips[p.Name] = p.Status.PodIP
			}
		}
		if len(ips) == n {
			return ips
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d pods in %s run with an IP after 90s", len(ips), n, ns)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func podPolicy(ns, name, app, fromApp string, port *networkingv1.NetworkPolicyPort) *networkingv1.NetworkPolicy {
	rule := networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fromApp}},
	}}}
	if port != nil {
		rule.Ports = []networkingv1.NetworkPolicyPort{*port}
	}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{rule},
		},
	}
}

// controllerCA reads the CA the controller publishes, as agents do.
func controllerCA(t *testing.T, ctx context.Context, kube kubernetes.Interface) *x509.CertPool {
	t.Helper()
	cm, err := kube.CoreV1().ConfigMaps(cp.CAConfigMapNamespace).Get(ctx, cp.CAConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the controller's CA ConfigMap: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data[cp.CAConfigMapKey])) {
		t.Fatalf("ConfigMap %s/%s holds no CA certificate under %s", cp.CAConfigMapNamespace, cp.CAConfigMapName, cp.CAConfigMapKey)
	}
	return pool
}

// nodeToken mints a token of the ServiceAccount kube-system/sa (created if
// needed) bound to node.
func nodeToken(t *testing.T, ctx context.Context, kube kubernetes.Interface, sa, node string) string {
	t.Helper()
	_, err := kube.CoreV1().ServiceAccounts(lab.AgentServiceAccountNamespace).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := lab.MintNodeToken(ctx, kube, lab.AgentServiceAccountNamespace, sa, n, 3600)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// checkTokenReview records what TokenReview says about a node-bound token
// on this Kubernetes version: the controller relies on the node name in
// the user's extra.
func checkTokenReview(t *testing.T, ctx context.Context, kube kubernetes.Interface, token, node string) {
	t.Helper()
	res, err := kube.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := res.Status.User
	t.Logf("TokenReview of a token bound to %s: authenticated=%v user=%s extra=%v", node, res.Status.Authenticated, u.Username, u.Extra)
	if got := u.Extra["authentication.kubernetes.io/node-name"]; !res.Status.Authenticated || len(got) != 1 || got[0] != node {
		t.Fatalf("TokenReview does not report the token's node %s in extra[authentication.kubernetes.io/node-name]: %+v", node, res.Status)
	}
}

// watch is an open watch stream.
type watch struct {
	events chan cp.Event
	errs   chan error
	mode   string // the WatchModeHeader of the response

	incarnation string // of the last BOOKMARK seen by next
}

// openWatch starts a watch of node, resuming from resumeFrom if not empty.
func openWatch(t *testing.T, ctx context.Context, client *http.Client, base, node, token, resumeFrom string) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	query := url.Values{"node": {node}}
	if resumeFrom != "" {
		query.Set(cp.ResumeParam, resumeFrom)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+cp.WatchPath+"?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("watch of %s: %v", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("watch of %s: %s %s", node, resp.Status, body)
	}
	w := &watch{events: make(chan cp.Event, 1000), errs: make(chan error, 1), mode: resp.Header.Get(cp.WatchModeHeader)}
	go func() {
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var ev cp.Event
			if err := dec.Decode(&ev); err != nil {
				w.errs <- err
				return
			}
			w.events <- ev
		}
	}()
	return w
}

func (w *watch) next(t *testing.T, timeout time.Duration) cp.Event {
	t.Helper()
	select {
	case ev := <-w.events:
		if ev.Type == cp.Bookmark {
			w.incarnation = ev.Incarnation
		}
		return ev
	case err := <-w.errs:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return cp.Event{}
}

// spanSummary is a span by content: policies by namespace/name, groups as
// their members' "namespace/name ip" lists, sorted.
type spanSummary struct {
	Policies        []string
	AppliedToGroups [][]string
	AddressGroups   [][]string
}

func summarize(s *cp.NodeState) spanSummary {
	var out spanSummary
	for _, p := range s.Policies {
		out.Policies = append(out.Policies, p.SourceRef.Namespace+"/"+p.SourceRef.Name)
	}
	members := func(ms []cp.GroupMember) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Key()+" "+strings.Join(m.IPs, ","))
		}
		slices.Sort(out)
		return out
	}
	for _, g := range s.AppliedToGroups {
		out.AppliedToGroups = append(out.AppliedToGroups, members(g.Members))
	}
	for _, g := range s.AddressGroups {
		out.AddressGroups = append(out.AddressGroups, members(g.Members))
	}
	slices.Sort(out.Policies)
	cmpLists := func(a, b []string) int { return strings.Compare(strings.Join(a, ";"), strings.Join(b, ";")) }
	slices.SortFunc(out.AppliedToGroups, cmpLists)
	slices.SortFunc(out.AddressGroups, cmpLists)
	return out
}

// untilSpan applies events (the initial list, its BOOKMARK, then changes)
// until the span equals want, and returns the state.
func (w *watch) untilSpan(t *testing.T, want spanSummary, timeout time.Duration) *cp.NodeState {
	t.Helper()
	state := cp.NewNodeState()
	deadline := time.Now().Add(timeout)
	bookmark := false
	for {
		if bookmark && fmt.Sprint(summarize(state)) == fmt.Sprint(want) {
			return state
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("span never became %+v; last %+v", want, summarize(state))
		}
		ev := w.next(t, left)
		switch ev.Type {
		case cp.Bookmark:
			bookmark = true
		case cp.Added, cp.Modified:
			switch ev.Kind {
			case cp.KindNetworkPolicy:
				state.Policies[ev.Name] = ev.NetworkPolicy
			case cp.KindAppliedToGroup:
				g := ev.AppliedToGroup
				if ev.Type == cp.Modified {
					g = &cp.AppliedToGroup{Name: ev.Name, Members: patched(state.AppliedToGroups[ev.Name].Members, ev.Patch)}
				}
				state.AppliedToGroups[ev.Name] = g
			case cp.KindAddressGroup:
				g := ev.AddressGroup
				if ev.Type == cp.Modified {
					g = &cp.AddressGroup{Name: ev.Name, Members: patched(state.AddressGroups[ev.Name].Members, ev.Patch)}
				}
				state.AddressGroups[ev.Name] = g
			}
		case cp.Deleted:
			delete(state.Policies, ev.Name)
			delete(state.AppliedToGroups, ev.Name)
			delete(state.AddressGroups, ev.Name)
		}
		for _, g := range state.AppliedToGroups {
			for _, m := range g.Members {
				if m.Node != "node1" {
					t.Fatalf("node1 received another node's member of AppliedToGroup %s: %+v", g.Name, m)
				}
			}
		}
	}
}

func patched(members []cp.GroupMember, p *cp.GroupPatch) []cp.GroupMember {
	out := slices.DeleteFunc(slices.Clone(members), func(m cp.GroupMember) bool {
		return slices.ContainsFunc(p.Removed, func(r cp.GroupMember) bool { return r.Key() == m.Key() })
	})
	return append(out, p.Added...)
}

func eventJSON(ev cp.Event) string {
	b, _ := json.Marshal(ev)
	return string(b)
}

// watchStatus makes a watch request and returns its status and the start
// of its body (a refused watch's reason).
func watchStatus(t *testing.T, ctx context.Context, client *http.Client, base, node, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+cp.WatchPath+"?node="+node, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, string(body)
}

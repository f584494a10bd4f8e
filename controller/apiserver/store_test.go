package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// ignoreRV leaves out the resume fields where a test checks only what the
// events say.
var ignoreRV = cmpopts.IgnoreFields(cp.Event{}, "RV", "Incarnation")

func member(name, node, ip string) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: "a", Name: name}, IPs: []string{ip}, Node: node}
}

func webPolicy() *cp.NetworkPolicy {
	return &cp.NetworkPolicy{
		Name:            "uid-web",
		SourceRef:       cp.NetworkPolicyReference{Type: "K8sNetworkPolicy", Namespace: "a", Name: "web", UID: "uid-web"},
		Rules:           []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"clients"}}}},
		AppliedToGroups: []string{"web"},
		PolicyTypes:     []string{"Ingress"},
	}
}

var (
	web1    = member("web1", "node1", "198.18.0.1")
	web2    = member("web2", "node2", "198.18.0.2")
	client1 = member("client1", "node3", "198.18.0.11")
	client2 = member("client2", "node3", "198.18.0.12")
)

func ptrs(ms ...cp.GroupMember) []*cp.GroupMember {
	out := make([]*cp.GroupMember, len(ms))
	for i := range ms {
		out[i] = &ms[i]
	}
	return out
}

// removed is a member as a patch removes it: only its pod.
func removed(m cp.GroupMember) cp.GroupMember { return cp.GroupMember{Pod: m.Pod} }

// newWebStore returns a synced store with the policy web, whose
// AppliedToGroup "web" and AddressGroup "clients" have the given members.
func newWebStore(bufferSize int, web, clients []cp.GroupMember) *Store {
	s := NewStore(bufferSize)
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web...), nil)
	s.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(clients...), nil)
	s.UpdatePolicy(webPolicy())
	s.SetSynced()
	return s
}

// agAdded is the ADDED event of an AddressGroup: its members as peers.
func agAdded(name string, members ...cp.GroupMember) cp.Event {
	return cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: name, AddressGroup: &cp.AddressGroup{Name: name, Members: orEmpty(asPeers(members, false))}}
}

func asPeers(ms []cp.GroupMember, withPorts bool) []cp.GroupMember {
	if ms == nil {
		return nil
	}
	out := make([]cp.GroupMember, len(ms))
	for i, m := range ms {
		out[i] = m.AsPeer(withPorts)
	}
	return out
}

func atgAdded(name string, members ...cp.GroupMember) cp.Event {
	return cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: name, AppliedToGroup: &cp.AppliedToGroup{Name: name, Members: orEmpty(members)}}
}

func orEmpty(ms []cp.GroupMember) []cp.GroupMember {
	if ms == nil {
		return []cp.GroupMember{}
	}
	return ms
}

func policyEvent(t cp.EventType, p *cp.NetworkPolicy) cp.Event {
	ev := cp.Event{Type: t, Kind: cp.KindNetworkPolicy, Name: p.Name}
	if t != cp.Deleted {
		ev.NetworkPolicy = p
	}
	return ev
}

// patchEvent is a MODIFIED event of a group; an AddressGroup's added
// members are peers.
func patchEvent(kind cp.Kind, name string, added, removed []cp.GroupMember) cp.Event {
	if kind == cp.KindAddressGroup {
		added = asPeers(added, false)
	}
	return cp.Event{Type: cp.Modified, Kind: kind, Name: name, Patch: &cp.GroupPatch{Added: added, Removed: removed}}
}

func deleted(kind cp.Kind, name string) cp.Event {
	return cp.Event{Type: cp.Deleted, Kind: kind, Name: name}
}

// TestSpan drives a store through changes and checks the exact events each
// node's watcher gets, in order.
func TestSpan(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	s := newWebStore(DefaultBufferSize, []cp.GroupMember{web1}, []cp.GroupMember{client1})
	watch := func(node string) *Watcher {
		w := s.Watch(node)
		t.Cleanup(w.Stop)
		return w
	}
	n1, n2, n3 := watch("node1"), watch("node2"), watch("node3")
	next := func(w *Watcher, what string, want ...cp.Event) {
		t.Helper()
		var got []cp.Event
		if len(want) > 0 {
			var err error
			if got, err = w.Next(ctx); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		} else {
			w.mu.Lock()
			got = w.queue
			w.mu.Unlock()
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), ignoreRV); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	next(n1, "node1 initial", agAdded("clients", client1), atgAdded("web", web1), policyEvent(cp.Added, webPolicy()), cp.Event{Type: cp.Bookmark})
	next(n2, "node2 initial", cp.Event{Type: cp.Bookmark})
	next(n3, "node3 initial (its pods are peers only)", cp.Event{Type: cp.Bookmark})

	// A web pod on node2: node2 gets the group (its own member only), the
	// AddressGroup, then the policy; node1 nothing.
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web2), nil)
	next(n2, "node2 enters the span", atgAdded("web", web2), agAdded("clients", client1), policyEvent(cp.Added, webPolicy()))
	next(n1, "node1 does not see node2's member")

	// A new client: one patch to each node of the AddressGroup's span.
	s.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(client2), nil)
	next(n1, "node1 patch", patchEvent(cp.KindAddressGroup, "clients", []cp.GroupMember{client2}, nil))
	next(n2, "node2 patch", patchEvent(cp.KindAddressGroup, "clients", []cp.GroupMember{client2}, nil))
	next(n3, "node3 is not in the span")

	// web1 changes its IP: node1 gets a patch of its group.
	moved := web1
	moved.IPs = []string{"198.18.0.99"}
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(moved), ptrs(web1))
	next(n1, "node1 member changed", patchEvent(cp.KindAppliedToGroup, "web", []cp.GroupMember{moved}, []cp.GroupMember{removed(web1)}))
	next(n2, "node2 does not see node1's member")

	// The policy gets a second AddressGroup: it comes before the policy.
	s.UpdateGroup(cp.KindAddressGroup, "admins", nil, nil)
	changed := webPolicy()
	changed.Rules = append(changed.Rules, cp.Rule{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"admins"}}})
	s.UpdatePolicy(changed)
	next(n1, "node1 policy gains a group", agAdded("admins"), policyEvent(cp.Modified, changed))
	next(n2, "node2 policy gains a group", agAdded("admins"), policyEvent(cp.Modified, changed))
	// And loses the first one: it goes after the policy.
	onlyAdmins := webPolicy()
	onlyAdmins.Rules = []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"admins"}}}}
	s.UpdatePolicy(onlyAdmins)
	next(n1, "node1 policy loses a group", policyEvent(cp.Modified, onlyAdmins), deleted(cp.KindAddressGroup, "clients"))
	next(n2, "node2 policy loses a group", policyEvent(cp.Modified, onlyAdmins), deleted(cp.KindAddressGroup, "clients"))
	s.DeleteGroup(cp.KindAddressGroup, "clients")
	next(n1, "deleting an unused group sends nothing")

	// node2's last web pod goes: the policy leaves, then the groups.
	s.UpdateGroup(cp.KindAppliedToGroup, "web", nil, ptrs(web2))
	next(n2, "node2 leaves the span", policyEvent(cp.Deleted, onlyAdmins), deleted(cp.KindAddressGroup, "admins"), deleted(cp.KindAppliedToGroup, "web"))

	// Deleting the policy empties node1's span.
	s.DeletePolicy(onlyAdmins.Name)
	next(n1, "node1 after the policy was deleted", policyEvent(cp.Deleted, onlyAdmins), deleted(cp.KindAddressGroup, "admins"))
	for _, node := range []string{"node1", "node2", "node3"} {
		got := s.NodeState(node)
		want := cp.NewNodeState()
		if node == "node1" {
			want.AppliedToGroups["web"] = &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{moved}}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("NodeState(%s) (-want +got):\n%s", node, diff)
		}
	}
}

// stream is a watch over HTTP whose events arrive on a channel.
type stream struct {
	events chan cp.Event
	done   chan error // the read error when the stream ends
}

func startWatch(t *testing.T, ctx context.Context, baseURL, node string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+cp.WatchPath+"?node="+node, nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("watch %s: %v", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch %s: status %s", node, resp.Status)
	}
	s := &stream{events: make(chan cp.Event, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev cp.Event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				s.done <- err
				return
			}
			s.events <- ev
		}
		s.done <- sc.Err()
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	return s
}

// expect reads exactly len(want) events and compares them.
func (s *stream) expect(t *testing.T, what string, want ...cp.Event) {
	t.Helper()
	var got []cp.Event
	timeout := time.After(5 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-s.events:
			got = append(got, ev)
		case err := <-s.done:
			t.Fatalf("%s: stream ended (%v) after %d events: %+v", what, err, len(got), got)
		case <-timeout:
			t.Fatalf("%s: timed out after %d of %d events: %+v", what, len(got), len(want), got)
		}
	}
	if diff := cmp.Diff(want, got, ignoreRV); diff != "" {
		t.Errorf("%s: events mismatch (-want +got):\n%s", what, diff)
	}
}

var allowAll = AuthorizerFunc(func(context.Context, *http.Request, string) error { return nil })

func newServer(t *testing.T, store *Store) *httptest.Server {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	srv := httptest.NewServer(NewHandler(ctx, store, allowAll))
	t.Cleanup(srv.Close)
	return srv
}

func TestWatchOverHTTP(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := newWebStore(DefaultBufferSize, []cp.GroupMember{web1}, []cp.GroupMember{client1})
	srv := newServer(t, store)

	node1 := startWatch(t, ctx, srv.URL, "node1")
	node1.expect(t, "node1 initial state",
		agAdded("clients", client1), atgAdded("web", web1), policyEvent(cp.Added, webPolicy()), cp.Event{Type: cp.Bookmark})
	node2 := startWatch(t, ctx, srv.URL, "node2")
	node2.expect(t, "node2 initial state", cp.Event{Type: cp.Bookmark})

	// A new client only changes node1's AddressGroup: node1 gets exactly
	// one patch, node2 nothing.
	store.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(client2), nil)
	node1.expect(t, "node1 after a client was added", patchEvent(cp.KindAddressGroup, "clients", []cp.GroupMember{client2}, nil))

	// A web pod on node2 brings the policy into node2's span. That these are
	// node2's next events proves it got nothing for the previous change.
	store.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web2), nil)
	node2.expect(t, "node2 after a web pod arrived on it",
		atgAdded("web", web2), agAdded("clients", client1, client2), policyEvent(cp.Added, webPolicy()))
	// node1's AppliedToGroup holds only node1's members: no event for node1.
	// Removing client1 then shows node1's next event is that removal.
	store.UpdateGroup(cp.KindAddressGroup, "clients", nil, ptrs(client1))
	node1.expect(t, "node1 after a client was removed", patchEvent(cp.KindAddressGroup, "clients", nil, []cp.GroupMember{removed(client1)}))
	node2.expect(t, "node2 after a client was removed", patchEvent(cp.KindAddressGroup, "clients", nil, []cp.GroupMember{removed(client1)}))
}

func TestWatchBeforeSynced(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := NewStore(DefaultBufferSize)
	srv := newServer(t, store)
	node1 := startWatch(t, ctx, srv.URL, "node1")
	store.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web1), nil)
	store.UpdateGroup(cp.KindAddressGroup, "clients", nil, nil)
	store.UpdatePolicy(webPolicy())
	select {
	case ev := <-node1.events:
		t.Fatalf("got %+v before the model was synced; a BOOKMARK now could tell the agent a partial span", ev)
	case <-time.After(100 * time.Millisecond):
	}
	store.SetSynced()
	node1.expect(t, "node1 initial state once synced",
		agAdded("clients"), atgAdded("web", web1), policyEvent(cp.Added, webPolicy()), cp.Event{Type: cp.Bookmark})
}

func TestBlockedWatcherIsDropped(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	const buffer = 2
	store := newWebStore(buffer, []cp.GroupMember{web1}, nil)
	srv := newServer(t, store)

	blocked := store.Watch("node1") // never read until the end
	t.Cleanup(blocked.Stop)
	reader := startWatch(t, ctx, srv.URL, "node1")
	reader.expect(t, "initial state", agAdded("clients"), atgAdded("web", web1), policyEvent(cp.Added, webPolicy()), cp.Event{Type: cp.Bookmark})

	// Each change adds one client: one event per change. The blocked
	// watcher overflows after buffer events; UpdateGroup must not wait for
	// it.
	for i := range buffer + 3 {
		c := member(fmt.Sprintf("client%d", i), "node3", fmt.Sprintf("198.18.0.%d", 20+i))
		published := make(chan struct{})
		go func() {
			store.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(c), nil)
			close(published)
		}()
		select {
		case <-published:
		case <-time.After(5 * time.Second):
			t.Fatalf("UpdateGroup blocked on a watcher")
		}
		reader.expect(t, "reader keeps receiving", patchEvent(cp.KindAddressGroup, "clients", []cp.GroupMember{c}, nil))
	}
	if _, err := blocked.Next(ctx); !errors.Is(err, ErrOverflow) {
		t.Fatalf("blocked watcher: Next() error = %v, want ErrOverflow", err)
	}
	// A new watch of the dropped agent re-lists the current state.
	relist := store.Watch("node1")
	t.Cleanup(relist.Stop)
	events, err := relist.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := events[0].AddressGroup; got == nil || len(got.Members) != buffer+3 {
		t.Errorf("re-list: first event %+v, want the AddressGroup with %d members", events[0], buffer+3)
	}
}

func TestWatchRequests(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	// The authorizer admits "Bearer node1-token" for node1 only.
	auth := AuthorizerFunc(func(_ context.Context, r *http.Request, node string) error {
		switch h := r.Header.Get("Authorization"); {
		case h == "":
			return &AuthError{Status: http.StatusUnauthorized, Reason: "no bearer token"}
		case h == "Bearer broken":
			return errors.New("the apiserver is unreachable")
		case h != "Bearer node1-token" || node != "node1":
			return &AuthError{Status: http.StatusForbidden, Reason: "the token is bound to node1"}
		}
		return nil
	})
	srv := httptest.NewServer(NewHandler(ctx, newWebStore(DefaultBufferSize, nil, nil), auth))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, method, path, token string
		wantStatus                int
		wantBody                  string
		wantChallenge             bool
	}{
		{name: "missing node", method: http.MethodGet, path: cp.WatchPath, wantStatus: http.StatusBadRequest, wantBody: `missing required query parameter "node"`},
		{name: "wrong method", method: http.MethodPost, path: cp.WatchPath + "?node=n", wantStatus: http.StatusMethodNotAllowed, wantBody: "only GET"},
		{name: "healthz needs no token", method: http.MethodGet, path: HealthzPath, wantStatus: http.StatusOK, wantBody: "ok"},
		{name: "no token", method: http.MethodGet, path: cp.WatchPath + "?node=node1", wantStatus: http.StatusUnauthorized,
			wantBody: `watch of node "node1" refused: no bearer token`, wantChallenge: true},
		{name: "another node's span", method: http.MethodGet, path: cp.WatchPath + "?node=node2", token: "node1-token",
			wantStatus: http.StatusForbidden, wantBody: `watch of node "node2" refused: the token is bound to node1`},
		{name: "authorization unavailable", method: http.MethodGet, path: cp.WatchPath + "?node=node1", token: "broken",
			wantStatus: http.StatusServiceUnavailable, wantBody: "the apiserver is unreachable"},
		{name: "own node", method: http.MethodGet, path: cp.WatchPath + "?node=node1", token: "node1-token",
			wantStatus: http.StatusOK, wantBody: `{"type":"BOOKMARK","rv":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body []byte
			if resp.StatusCode == http.StatusOK && tt.path != HealthzPath {
				// A watch does not end: read its first line.
				line, _ := bufio.NewReader(resp.Body).ReadBytes('\n')
				body = line
			} else {
				body, _ = io.ReadAll(resp.Body)
			}
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if got := resp.Header.Get("WWW-Authenticate") != ""; got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate present = %v, want %v", got, tt.wantChallenge)
			}
		})
	}
}

// TestAddressGroupPorts checks that AddressGroup members travel without
// their node, with their ports only while SetAddressGroupPorts says so, and
// that a change resends only the members that have ports.
func TestAddressGroupPorts(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	named := client1
	named.Ports = []cp.NamedPort{{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP}}
	s := newWebStore(DefaultBufferSize, []cp.GroupMember{web1}, []cp.GroupMember{named, client2})
	w := s.Watch("node1")
	t.Cleanup(w.Stop)
	next := func(what string, want ...cp.Event) {
		t.Helper()
		got, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), ignoreRV); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
	next("initial", agAdded("clients", named, client2), atgAdded("web", web1), policyEvent(cp.Added, webPolicy()), cp.Event{Type: cp.Bookmark})

	s.SetAddressGroupPorts("clients", true)
	withPorts := cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients",
		Patch: &cp.GroupPatch{Added: []cp.GroupMember{named.AsPeer(true)}, Removed: []cp.GroupMember{removed(named)}}}
	next("ports on: the member with ports again", withPorts)
	s.SetAddressGroupPorts("clients", true) // no change, no event
	if got := s.NodeState("node1").AddressGroups["clients"].Members; !cmp.Equal(got, []cp.GroupMember{named.AsPeer(true), client2.AsPeer(true)}) {
		t.Errorf("span with ports: %+v", got)
	}
	s.SetAddressGroupPorts("clients", false)
	withPorts.Patch.Added = []cp.GroupMember{named.AsPeer(false)}
	next("ports off", withPorts)
}

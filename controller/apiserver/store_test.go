package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/networkpolicy"
)

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

// model returns a model with the policy web, whose AppliedToGroup "web" and
// AddressGroup "clients" have the given members.
func model(web, clients []cp.GroupMember) *networkpolicy.Model {
	return &networkpolicy.Model{
		Policies:        map[string]*cp.NetworkPolicy{"uid-web": webPolicy()},
		AppliedToGroups: map[string]*cp.AppliedToGroup{"web": {Name: "web", Members: web}},
		AddressGroups:   map[string]*cp.AddressGroup{"clients": {Name: "clients", Members: clients}},
	}
}

var (
	web1    = member("web1", "node1", "198.18.0.1")
	web2    = member("web2", "node2", "198.18.0.2")
	client1 = member("client1", "node3", "198.18.0.11")
	client2 = member("client2", "node3", "198.18.0.12")
)

func TestDiff(t *testing.T) {
	state := func(np *cp.NetworkPolicy, web, clients []cp.GroupMember) *cp.NodeState {
		s := cp.NewNodeState()
		if np != nil {
			s.Policies[np.Name] = np
		}
		if web != nil {
			s.AppliedToGroups["web"] = &cp.AppliedToGroup{Name: "web", Members: web}
		}
		if clients != nil {
			s.AddressGroups["clients"] = &cp.AddressGroup{Name: "clients", Members: clients}
		}
		return s
	}
	moved := client1
	moved.IPs = []string{"198.18.0.99"}
	changed := webPolicy()
	changed.Rules = nil
	full := state(webPolicy(), []cp.GroupMember{web1}, []cp.GroupMember{client1})

	tests := []struct {
		name     string
		from, to *cp.NodeState
		want     []cp.Event
	}{
		{name: "nil to nil", want: nil},
		{name: "equal states", from: full, to: state(webPolicy(), []cp.GroupMember{web1}, []cp.GroupMember{client1}), want: nil},
		{
			name: "everything added, groups first",
			to:   full,
			want: []cp.Event{
				{Type: cp.Added, Kind: cp.KindAddressGroup, Name: "clients", AddressGroup: full.AddressGroups["clients"]},
				{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: "web", AppliedToGroup: full.AppliedToGroups["web"]},
				{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: full.Policies["uid-web"]},
			},
		},
		{
			name: "everything deleted, policies first",
			from: full,
			want: []cp.Event{
				{Type: cp.Deleted, Kind: cp.KindNetworkPolicy, Name: "uid-web"},
				{Type: cp.Deleted, Kind: cp.KindAppliedToGroup, Name: "web"},
				{Type: cp.Deleted, Kind: cp.KindAddressGroup, Name: "clients"},
			},
		},
		{
			name: "members added and removed are a patch",
			from: full,
			to:   state(webPolicy(), []cp.GroupMember{web1, web2}, []cp.GroupMember{client2}),
			want: []cp.Event{
				{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Added: []cp.GroupMember{client2}, Removed: []cp.GroupMember{client1}}},
				{Type: cp.Modified, Kind: cp.KindAppliedToGroup, Name: "web", Patch: &cp.GroupPatch{Name: "web", Added: []cp.GroupMember{web2}}},
			},
		},
		{
			name: "a member whose IPs changed is removed and added",
			from: full,
			to:   state(webPolicy(), []cp.GroupMember{web1}, []cp.GroupMember{moved}),
			want: []cp.Event{
				{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Added: []cp.GroupMember{moved}, Removed: []cp.GroupMember{client1}}},
			},
		},
		{
			name: "a changed policy is sent whole",
			from: full,
			to:   state(changed, []cp.GroupMember{web1}, []cp.GroupMember{client1}),
			want: []cp.Event{{Type: cp.Modified, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: changed}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Diff(tt.from, tt.to)); diff != "" {
				t.Errorf("Diff mismatch (-want +got):\n%s", diff)
			}
		})
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
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: events mismatch (-want +got):\n%s", what, diff)
	}
}

func newServer(t *testing.T, store *Store) *httptest.Server {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	srv := httptest.NewServer(NewHandler(ctx, store, AllowAll{}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWatchOverHTTP(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := NewStore(DefaultBufferSize)
	srv := newServer(t, store)
	store.Publish(model([]cp.GroupMember{web1}, []cp.GroupMember{client1}))

	node1 := startWatch(t, ctx, srv.URL, "node1")
	node1.expect(t, "node1 initial state",
		cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: "clients", AddressGroup: &cp.AddressGroup{Name: "clients", Members: []cp.GroupMember{client1}}},
		cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: "web", AppliedToGroup: &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{web1}}},
		cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: webPolicy()},
		cp.Event{Type: cp.Bookmark},
	)
	node2 := startWatch(t, ctx, srv.URL, "node2")
	node2.expect(t, "node2 initial state", cp.Event{Type: cp.Bookmark})

	// A new client only changes node1's AddressGroup: node1 gets exactly
	// one patch, node2 nothing.
	store.Publish(model([]cp.GroupMember{web1}, []cp.GroupMember{client1, client2}))
	node1.expect(t, "node1 after a client was added",
		cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Added: []cp.GroupMember{client2}}})

	// A web pod on node2 brings the policy into node2's span. That these are
	// node2's next events proves it got nothing for the previous model.
	store.Publish(model([]cp.GroupMember{web1, web2}, []cp.GroupMember{client1, client2}))
	node2.expect(t, "node2 after a web pod arrived on it",
		cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: "clients", AddressGroup: &cp.AddressGroup{Name: "clients", Members: []cp.GroupMember{client1, client2}}},
		cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: "web", AppliedToGroup: &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{web2}}},
		cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: webPolicy()},
	)
	// node1's AppliedToGroup holds only node1's members: no event for node1.
	// Removing client1 then shows node1's next event is that removal.
	store.Publish(model([]cp.GroupMember{web1, web2}, []cp.GroupMember{client2}))
	node1.expect(t, "node1 after a client was removed",
		cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Removed: []cp.GroupMember{client1}}})
	node2.expect(t, "node2 after a client was removed",
		cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Removed: []cp.GroupMember{client1}}})
}

func TestWatchBeforeFirstModel(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := NewStore(DefaultBufferSize)
	srv := newServer(t, store)
	node1 := startWatch(t, ctx, srv.URL, "node1")
	select {
	case ev := <-node1.events:
		t.Fatalf("got %+v before any model was published; a BOOKMARK now would tell the agent its span is empty", ev)
	case <-time.After(100 * time.Millisecond):
	}
	store.Publish(model([]cp.GroupMember{web1}, nil))
	node1.expect(t, "node1 initial state after the first model",
		cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: "clients", AddressGroup: &cp.AddressGroup{Name: "clients"}},
		cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: "web", AppliedToGroup: &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{web1}}},
		cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: webPolicy()},
		cp.Event{Type: cp.Bookmark},
	)
}

func TestBlockedWatcherIsDropped(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	const buffer = 2
	store := NewStore(buffer)
	srv := newServer(t, store)
	store.Publish(model([]cp.GroupMember{web1}, nil))

	blocked := store.Watch("node1") // never read until the end
	t.Cleanup(blocked.Stop)
	reader := startWatch(t, ctx, srv.URL, "node1")
	reader.expect(t, "initial state",
		cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: "clients", AddressGroup: &cp.AddressGroup{Name: "clients"}},
		cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: "web", AppliedToGroup: &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{web1}}},
		cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "uid-web", NetworkPolicy: webPolicy()},
		cp.Event{Type: cp.Bookmark},
	)

	// Each model adds one client: one event per model. The blocked watcher
	// overflows after buffer events; Publish must not wait for it.
	var clients []cp.GroupMember
	for i := range buffer + 3 {
		c := member("client"+string(rune('a'+i)), "node3", "198.18.0."+string(rune('0'+i)))
		clients = append(clients, c)
		published := make(chan struct{})
		go func() {
			store.Publish(model([]cp.GroupMember{web1}, append([]cp.GroupMember(nil), clients...)))
			close(published)
		}()
		select {
		case <-published:
		case <-time.After(5 * time.Second):
			t.Fatalf("Publish blocked on a watcher")
		}
		reader.expect(t, "reader keeps receiving",
			cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: "clients", Patch: &cp.GroupPatch{Name: "clients", Added: []cp.GroupMember{c}}})
	}
	if _, err := blocked.Next(ctx); !errors.Is(err, ErrOverflow) {
		t.Fatalf("blocked watcher: Next() error = %v, want ErrOverflow", err)
	}
}

func TestWatchRequests(t *testing.T) {
	srv := newServer(t, NewStore(DefaultBufferSize))
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantBody           string
	}{
		{"missing node", http.MethodGet, cp.WatchPath, http.StatusBadRequest, `missing required query parameter "node"`},
		{"wrong method", http.MethodPost, cp.WatchPath + "?node=n", http.StatusMethodNotAllowed, "only GET"},
		{"healthz", http.MethodGet, HealthzPath, http.StatusOK, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

package networkpolicy

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

func member(name, node, ip string) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: "a", Name: name}, IPs: []string{ip}, Node: node}
}

func testPolicy(name string, groups ...string) *cp.NetworkPolicy {
	return &cp.NetworkPolicy{
		Name:            name,
		SourceRef:       cp.NetworkPolicyReference{Type: "K8sNetworkPolicy", Namespace: "a", Name: name, UID: name},
		Rules:           []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: groups}}},
		AppliedToGroups: []string{"web"},
		PolicyTypes:     []string{"Ingress"},
	}
}

func addPolicy(np *cp.NetworkPolicy) cp.Event {
	return cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: np.Name, NetworkPolicy: np}
}

func addATG(name string, members ...cp.GroupMember) cp.Event {
	return cp.Event{Type: cp.Added, Kind: cp.KindAppliedToGroup, Name: name, AppliedToGroup: &cp.AppliedToGroup{Name: name, Members: members}}
}

func addAG(name string, members ...cp.GroupMember) cp.Event {
	return cp.Event{Type: cp.Added, Kind: cp.KindAddressGroup, Name: name, AddressGroup: &cp.AddressGroup{Name: name, Members: members}}
}

func patchAG(name string, added, removed []cp.GroupMember) cp.Event {
	return cp.Event{Type: cp.Modified, Kind: cp.KindAddressGroup, Name: name, Patch: &cp.GroupPatch{Name: name, Added: added, Removed: removed}}
}

var bookmark = cp.Event{Type: cp.Bookmark}

var (
	web1    = member("web1", "node1", "198.18.0.1")
	client1 = member("client1", "node2", "198.18.0.11")
	client2 = member("client2", "node2", "198.18.0.12")
	client3 = member("client3", "node2", "198.18.0.13")
)

// initialList is a complete stream start: policy p1 with groups web and clients.
func initialList() []cp.Event {
	return []cp.Event{addAG("clients", client1, client2), addATG("web", web1), addPolicy(testPolicy("p1", "clients")), bookmark}
}

func state(policies []*cp.NetworkPolicy, atgs []*cp.AppliedToGroup, ags []*cp.AddressGroup) *cp.NodeState {
	s := cp.NewNodeState()
	for _, p := range policies {
		s.Policies[p.Name] = p
	}
	for _, g := range atgs {
		s.AppliedToGroups[g.Name] = g
	}
	for _, g := range ags {
		s.AddressGroups[g.Name] = g
	}
	return s
}

func newTestCache(t *testing.T, dir string) (*Cache, *atomic.Int32) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	var changes atomic.Int32
	c, err := NewCache(ctx, dir, func() { changes.Add(1) })
	if err != nil {
		t.Fatalf("NewCache: %v", err)
	}
	return c, &changes
}

func TestCacheHandle(t *testing.T) {
	movedClient2 := client2
	movedClient2.IPs = []string{"198.18.0.99"}
	webATG := &cp.AppliedToGroup{Name: "web", Members: []cp.GroupMember{web1}}
	tests := []struct {
		name        string
		events      []cp.Event
		want        *cp.NodeState
		wantChanges int32
		wantSynced  bool
		wantErr     string // error of the last event
	}{
		{
			name:        "initial list is applied at the bookmark",
			events:      initialList(),
			want:        state([]*cp.NetworkPolicy{testPolicy("p1", "clients")}, []*cp.AppliedToGroup{webATG}, []*cp.AddressGroup{{Name: "clients", Members: []cp.GroupMember{client1, client2}}}),
			wantChanges: 1,
			wantSynced:  true,
		},
		{
			name:        "list without bookmark is not applied",
			events:      initialList()[:3],
			want:        cp.NewNodeState(),
			wantChanges: 0,
		},
		{
			name: "patches add, remove and replace members",
			events: append(initialList(),
				patchAG("clients", []cp.GroupMember{client3}, []cp.GroupMember{client1}),
				patchAG("clients", []cp.GroupMember{movedClient2}, []cp.GroupMember{client2}),
			),
			want:        state([]*cp.NetworkPolicy{testPolicy("p1", "clients")}, []*cp.AppliedToGroup{webATG}, []*cp.AddressGroup{{Name: "clients", Members: []cp.GroupMember{movedClient2, client3}}}),
			wantChanges: 3,
			wantSynced:  true,
		},
		{
			name: "modified policy replaces it; deletes remove objects",
			events: append(initialList(),
				cp.Event{Type: cp.Modified, Kind: cp.KindNetworkPolicy, Name: "p1", NetworkPolicy: testPolicy("p1")},
				cp.Event{Type: cp.Deleted, Kind: cp.KindAddressGroup, Name: "clients"},
				cp.Event{Type: cp.Deleted, Kind: cp.KindAddressGroup, Name: "never-existed"},
			),
			want:        state([]*cp.NetworkPolicy{testPolicy("p1")}, []*cp.AppliedToGroup{webATG}, nil),
			wantChanges: 3, // the delete of an unknown group changes nothing
			wantSynced:  true,
		},
		{
			name:        "patch of an unknown group",
			events:      append(initialList(), patchAG("unknown", []cp.GroupMember{client3}, nil)),
			wantErr:     "patched AddressGroup is not in the cache",
			wantChanges: 1,
			wantSynced:  true,
		},
		{
			name:    "non-ADDED event within the list",
			events:  []cp.Event{addATG("web"), patchAG("web", nil, nil)},
			wantErr: "unexpected MODIFIED event before the BOOKMARK",
		},
		{
			name:        "ADDED without its object",
			events:      append(initialList(), cp.Event{Type: cp.Added, Kind: cp.KindNetworkPolicy, Name: "p2"}),
			wantErr:     "event without its NetworkPolicy",
			wantChanges: 1,
			wantSynced:  true,
		},
		{
			name:        "unknown kind",
			events:      append(initialList(), cp.Event{Type: cp.Deleted, Kind: "Service", Name: "x"}),
			wantErr:     `unknown kind "Service"`,
			wantChanges: 1,
			wantSynced:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, changes := newTestCache(t, "")
			c.StartStream(false)
			for i, ev := range tt.events {
				err := c.Handle(ev)
				if i < len(tt.events)-1 || tt.wantErr == "" {
					if err != nil {
						t.Fatalf("event %d (%s %s): %v", i, ev.Type, ev.Kind, err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("last event: error %v, want one containing %q", err, tt.wantErr)
				}
			}
			if tt.want != nil {
				if diff := cmp.Diff(tt.want, c.Snapshot()); diff != "" {
					t.Errorf("state mismatch (-want +got):\n%s", diff)
				}
			}
			if got := changes.Load(); got != tt.wantChanges {
				t.Errorf("OnChange called %d times, want %d", got, tt.wantChanges)
			}
			if c.Synced() != tt.wantSynced {
				t.Errorf("Synced() = %v, want %v", c.Synced(), tt.wantSynced)
			}
		})
	}
}

func TestCacheRelistReplacesStateAtBookmark(t *testing.T) {
	c, changes := newTestCache(t, "")
	c.StartStream(false)
	for _, ev := range initialList() {
		if err := c.Handle(ev); err != nil {
			t.Fatal(err)
		}
	}
	before := c.Snapshot()

	// A reconnect: the new list has only p2 with the group "others".
	c.StartStream(false)
	for _, ev := range []cp.Event{addAG("others", client3), addATG("web", web1), addPolicy(testPolicy("p2", "others"))} {
		if err := c.Handle(ev); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, c.Snapshot()); diff != "" {
			t.Fatalf("state changed before the BOOKMARK of the re-list (-before +now):\n%s", diff)
		}
	}
	if err := c.Handle(bookmark); err != nil {
		t.Fatal(err)
	}
	want := state([]*cp.NetworkPolicy{testPolicy("p2", "others")},
		[]*cp.AppliedToGroup{{Name: "web", Members: []cp.GroupMember{web1}}},
		[]*cp.AddressGroup{{Name: "others", Members: []cp.GroupMember{client3}}})
	if diff := cmp.Diff(want, c.Snapshot()); diff != "" {
		t.Errorf("state after re-list mismatch (-want +got):\n%s", diff)
	}
	if got := changes.Load(); got != 2 {
		t.Errorf("OnChange called %d times, want 2 (one per bookmark)", got)
	}
}

func TestCacheSnapshotIsACopy(t *testing.T) {
	c, _ := newTestCache(t, "")
	c.StartStream(false)
	for _, ev := range initialList() {
		if err := c.Handle(ev); err != nil {
			t.Fatal(err)
		}
	}
	s := c.Snapshot()
	s.AddressGroups["clients"].Members[0].IPs[0] = "198.19.0.1"
	delete(s.Policies, "p1")
	if diff := cmp.Diff(s, c.Snapshot()); diff == "" {
		t.Errorf("modifying a snapshot modified the cache")
	}
}

func TestCachePersistence(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c, _ := newTestCache(t, dir)
	c.StartStream(false)
	for _, ev := range append(initialList(), patchAG("clients", []cp.GroupMember{client3}, nil)) {
		if err := c.Handle(ev); err != nil {
			t.Fatal(err)
		}
	}
	want := c.Snapshot()

	restarted, changes := newTestCache(t, dir)
	if diff := cmp.Diff(want, restarted.Snapshot()); diff != "" {
		t.Errorf("restored state mismatch (-want +got):\n%s", diff)
	}
	if restarted.Synced() {
		t.Errorf("a restored cache must not claim to be synced with the controller")
	}
	if changes.Load() != 0 {
		t.Errorf("loading the state must not call OnChange")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != StateFileName {
		t.Errorf("state dir holds %v, want only %s (no temporary files)", entries, StateFileName)
	}

	// A corrupt file is ignored, and replaced by the next state.
	if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt, _ := newTestCache(t, dir)
	if diff := cmp.Diff(cp.NewNodeState(), corrupt.Snapshot()); diff != "" {
		t.Errorf("state from a corrupt file (-want +got):\n%s", diff)
	}
	corrupt.StartStream(false)
	if err := corrupt.Handle(bookmark); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(filepath.Join(dir, StateFileName)); err != nil {
		t.Errorf("the corrupt state file was not replaced: %v", err)
	}
}

// TestCacheResumeToken follows the cache's token through a list, live
// events, a restart, a resumed stream and a broken one.
func TestCacheResumeToken(t *testing.T) {
	dir := t.TempDir()
	c, _ := newTestCache(t, dir)
	handle := func(c *Cache, events ...cp.Event) {
		t.Helper()
		for _, ev := range events {
			if err := c.Handle(ev); err != nil {
				t.Fatalf("%s %s: %v", ev.Type, ev.Name, err)
			}
		}
	}
	wantToken := func(c *Cache, what, want string) {
		t.Helper()
		if got := c.ResumeToken(); got != want {
			t.Errorf("%s: token %q, want %q", what, got, want)
		}
	}
	wantToken(c, "new cache", "")

	c.StartStream(false)
	list := initialList()
	list[len(list)-1] = cp.Event{Type: cp.Bookmark, RV: 5, Incarnation: "inc"}
	handle(c, list[:len(list)-1]...)
	wantToken(c, "during the list", "")
	handle(c, list[len(list)-1])
	wantToken(c, "after the list", "inc.5")
	live := patchAG("clients", []cp.GroupMember{client3}, nil)
	live.RV = 7
	handle(c, live)
	wantToken(c, "after a live event", "inc.7")

	// A restarted agent resumes where its persisted state is.
	restarted, _ := newTestCache(t, dir)
	wantToken(restarted, "restarted", "inc.7")
	if diff := cmp.Diff(c.Snapshot(), restarted.Snapshot()); diff != "" {
		t.Errorf("restored state (-want +got):\n%s", diff)
	}
	restarted.StartStream(true)
	missed := patchAG("clients", nil, []cp.GroupMember{client1})
	missed.RV = 9
	handle(restarted, missed)
	if restarted.Synced() {
		t.Error("synced before the BOOKMARK that ends the missed events")
	}
	handle(restarted, cp.Event{Type: cp.Bookmark, RV: 12, Incarnation: "inc"})
	wantToken(restarted, "after a resumed stream", "inc.12")
	if !restarted.Synced() {
		t.Error("not synced after a resumed stream's BOOKMARK")
	}
	if got := restarted.Snapshot().AddressGroups["clients"].Members; !cmp.Equal(got, []cp.GroupMember{client2, client3}) {
		t.Errorf("clients after the missed event: %v", got)
	}

	// An event that does not fit drops the token: the next stream lists.
	if err := restarted.Handle(patchAG("unknown", nil, nil)); err == nil {
		t.Fatal("a patch of an unknown group was accepted")
	}
	wantToken(restarted, "after a refused event", "")
}

// TestCacheLoadsOlderStateFile reads a state file written before pod
// references were strings and before the resume token.
func TestCacheLoadsOlderStateFile(t *testing.T) {
	dir := t.TempDir()
	old := `{"policies":{},"appliedToGroups":{"web":{"name":"web","members":[{"pod":{"namespace":"a","name":"web1"},"ips":["198.18.0.1"],"node":"node1"}]}},"addressGroups":{}}`
	if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := newTestCache(t, dir)
	want := state(nil, []*cp.AppliedToGroup{{Name: "web", Members: []cp.GroupMember{web1}}}, nil)
	if diff := cmp.Diff(want, c.Snapshot()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if tok := c.ResumeToken(); tok != "" {
		t.Errorf("token %q from a file without one", tok)
	}
}

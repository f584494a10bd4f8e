package apiserver

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/klog/v2/ktesting"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// takeAll returns the watcher's pending events without waiting.
func takeAll(t *testing.T, w *Watcher) []cp.Event {
	t.Helper()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	var all []cp.Event
	for {
		events, err := w.Next(done)
		if err != nil {
			return all
		}
		all = append(all, events...)
	}
}

// tokenOf is the resume token after the last of events.
func tokenOf(t *testing.T, s *Store, events []cp.Event) string {
	t.Helper()
	if len(events) == 0 {
		t.Fatal("no events to take a token from")
	}
	return cp.FormatResumeToken(s.incarnation, events[len(events)-1].RV)
}

func TestResume(t *testing.T) {
	const history = 4
	s := newWebStore(history, []cp.GroupMember{web1}, []cp.GroupMember{client1})
	w := s.Watch("node1")
	initial := takeAll(t, w)
	bookmark := initial[len(initial)-1]
	if bookmark.Type != cp.Bookmark || bookmark.Incarnation == "" || bookmark.RV == 0 {
		t.Fatalf("the initial list ends with %+v, want a BOOKMARK with an RV and the incarnation", bookmark)
	}
	for _, ev := range initial {
		if ev.RV != bookmark.RV {
			t.Errorf("list event %s %s has RV %d, want the list's RV %d", ev.Type, ev.Name, ev.RV, bookmark.RV)
		}
	}
	afterList := tokenOf(t, s, initial)

	// One change node1 receives live, then it disconnects and misses two.
	s.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(client2), nil)
	live := takeAll(t, w)
	w.Stop()
	afterLive := tokenOf(t, s, live)
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web2), nil) // node2 only
	s.UpdateGroup(cp.KindAddressGroup, "clients", nil, ptrs(client2))
	moved := web1
	moved.IPs = []string{"198.18.0.99"}
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(moved), ptrs(web1))
	missed := []cp.Event{
		patchEvent(cp.KindAddressGroup, "clients", nil, []cp.GroupMember{removed(client2)}),
		patchEvent(cp.KindAppliedToGroup, "web", []cp.GroupMember{moved}, []cp.GroupMember{removed(web1)}),
	}
	end := cp.Event{Type: cp.Bookmark, Incarnation: s.incarnation, RV: s.rv}

	other := NewStore(history)
	other.SetSynced()
	tests := []struct {
		name        string
		token       string
		wantResumed bool
		want        []cp.Event // RV and Incarnation compared only for the final BOOKMARK
	}{
		{name: "from the last live event: only the missed events", token: afterLive, wantResumed: true, want: append(missed, end)},
		{name: "from the list's BOOKMARK: every change since", token: afterList, wantResumed: true,
			want: append(append(live, missed...), end)},
		{name: "no token", token: "", want: nil},
		{name: "malformed token", token: "no-rv", want: nil},
		{name: "another store's token", token: cp.FormatResumeToken(other.incarnation, live[0].RV), want: nil},
		{name: "a token from the future", token: cp.FormatResumeToken(s.incarnation, s.rv+1), want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, resumed := s.Resume("node1", tt.token)
			defer w.Stop()
			got := takeAll(t, w)
			if resumed != tt.wantResumed {
				t.Fatalf("resumed = %v, want %v", resumed, tt.wantResumed)
			}
			if !tt.wantResumed {
				// A full list: the store's state at its current RV.
				want := s.initialEvents(s.nodes["node1"])
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("not a full list (-want +got):\n%s", diff)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(cp.Event{}, "RV")); diff != "" {
				t.Errorf("replayed events (-want +got):\n%s", diff)
			}
			if last := got[len(got)-1]; last.RV != end.RV || last.Incarnation != end.Incarnation {
				t.Errorf("final BOOKMARK %+v, want RV %d incarnation %s", last, end.RV, end.Incarnation)
			}
			for i := 1; i < len(got)-1; i++ {
				if got[i].RV <= got[i-1].RV {
					t.Errorf("RVs do not grow: %d after %d", got[i].RV, got[i-1].RV)
				}
			}
		})
	}

	// More changes than the history keeps: the old token re-lists.
	for i := range 3 * history {
		if i%2 == 0 {
			s.UpdateGroup(cp.KindAddressGroup, "clients", ptrs(client2), nil)
		} else {
			s.UpdateGroup(cp.KindAddressGroup, "clients", nil, ptrs(client2))
		}
	}
	if w, resumed := s.Resume("node1", afterLive); resumed {
		w.Stop()
		t.Errorf("resumed from a token older than the history")
	} else {
		w.Stop()
	}
	// While a recent one still resumes.
	recent := cp.FormatResumeToken(s.incarnation, s.nodes["node1"].history[len(s.nodes["node1"].history)-history].RV)
	w2, resumed := s.Resume("node1", recent)
	defer w2.Stop()
	if got := takeAll(t, w2); !resumed || len(got) != history {
		t.Errorf("resume from %d events back: resumed %v with %d events, want %d events and a BOOKMARK", history-1, resumed, len(got), history)
	}
}

// TestResumeAfterNodeCollected checks that a node whose span emptied and
// which was forgotten cannot be resumed from an old token.
func TestResumeAfterNodeCollected(t *testing.T) {
	s := newWebStore(DefaultBufferSize, []cp.GroupMember{web1}, nil)
	w := s.Watch("node1")
	token := tokenOf(t, s, takeAll(t, w))
	w.Stop()
	s.UpdateGroup(cp.KindAppliedToGroup, "web", nil, ptrs(web1)) // node1 leaves every span
	if _, ok := s.nodes["node1"]; ok {
		t.Fatal("node1 was not collected")
	}
	s.UpdateGroup(cp.KindAppliedToGroup, "web", ptrs(web1), nil) // and comes back
	w, resumed := s.Resume("node1", token)
	defer w.Stop()
	if resumed {
		t.Errorf("resumed across the node's collection: the events in between are lost")
	}
}

func TestResumeBeforeSynced(t *testing.T) {
	s := NewStore(DefaultBufferSize)
	w, resumed := s.Resume("node1", cp.FormatResumeToken(s.incarnation, 0))
	defer w.Stop()
	if resumed {
		t.Error("resumed before the model was synced")
	}
}

// TestResumeOverHTTP checks the query parameter and the mode header.
func TestResumeOverHTTP(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store := newWebStore(DefaultBufferSize, []cp.GroupMember{web1}, []cp.GroupMember{client1})
	srv := newServer(t, store)
	w := store.Watch("node1") // the store keeps the history of watched nodes only
	token := tokenOf(t, store, takeAll(t, w))
	w.Stop()
	for _, tt := range []struct{ token, wantMode string }{
		{token, cp.WatchModeResume},
		{"", cp.WatchModeList},
		{"stale.1", cp.WatchModeList},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+cp.WatchPath+"?node=node1&"+cp.ResumeParam+"="+tt.token, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(cp.WatchModeHeader); got != tt.wantMode {
			t.Errorf("token %q: mode %q, want %q", tt.token, got, tt.wantMode)
		}
	}
}

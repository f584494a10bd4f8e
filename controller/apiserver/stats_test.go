package apiserver

import (
	"testing"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

func TestStats(t *testing.T) {
	s := newWebStore(DefaultBufferSize, []cp.GroupMember{web1, web2}, []cp.GroupMember{client1})
	if got, want := s.Stats(), (StoreStats{Policies: 1, AppliedToGroups: 1, AddressGroups: 1}); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
	w1, w1again, w2 := s.Watch("node1"), s.Watch("node1"), s.Watch("node2")
	if got, want := s.Stats(), (StoreStats{Policies: 1, AppliedToGroups: 1, AddressGroups: 1, ConnectedNodes: 2, Watchers: 3}); got != want {
		t.Fatalf("with watchers: Stats() = %+v, want %+v", got, want)
	}
	w1.Stop()
	w1again.Stop()
	s.DeletePolicy(webPolicy().Name)
	s.DeleteGroup(cp.KindAddressGroup, "clients")
	if got, want := s.Stats(), (StoreStats{AppliedToGroups: 1, ConnectedNodes: 1, Watchers: 1}); got != want {
		t.Fatalf("after deletes: Stats() = %+v, want %+v", got, want)
	}
	w2.Stop()
}

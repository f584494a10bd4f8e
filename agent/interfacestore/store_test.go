package interfacestore

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// addrs makes cmp compare netip.Addr values with ==.
var addrs = cmpopts.EquateComparable(netip.Addr{})

func pod(ns, name, id, hostIf string) PodInterface {
	return PodInterface{
		PodNamespace: ns, PodName: name, ContainerID: id, IfName: "eth0", HostIfName: hostIf,
		OFPort: 3, MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, IP: netip.MustParseAddr("198.18.0.2"),
	}
}

func TestStore(t *testing.T) {
	a := pod("ns1", "a", "c1", "pal00000001")
	b := pod("ns1", "b", "c2", "pal00000002")
	aNewSandbox := pod("ns1", "a", "c3", "pal00000003")
	aRenamed := pod("ns2", "x", "c1", "pal00000009")

	tests := []struct {
		name       string
		add        []PodInterface
		del        []string
		wantList   []PodInterface
		container  string
		wantByID   *PodInterface
		hostIf     string
		wantByHost *PodInterface
		podNS      string
		podName    string
		wantByPod  []PodInterface
	}{
		{
			name: "empty", container: "c1", hostIf: "pal00000001", podNS: "ns1", podName: "a",
			wantList: []PodInterface{}, wantByPod: []PodInterface{},
		},
		{
			name: "two pods", add: []PodInterface{b, a},
			wantList:  []PodInterface{a, b},
			container: "c2", wantByID: &b,
			hostIf: "pal00000001", wantByHost: &a,
			podNS: "ns1", podName: "b", wantByPod: []PodInterface{b},
		},
		{
			name: "pod with two sandboxes", add: []PodInterface{aNewSandbox, a},
			wantList:  []PodInterface{a, aNewSandbox},
			container: "c3", wantByID: &aNewSandbox,
			hostIf: "pal00000003", wantByHost: &aNewSandbox,
			podNS: "ns1", podName: "a", wantByPod: []PodInterface{a, aNewSandbox},
		},
		{
			name: "delete", add: []PodInterface{a, b}, del: []string{"c1", "c1", "unknown"},
			wantList:  []PodInterface{b},
			container: "c1", hostIf: "pal00000001",
			podNS: "ns1", podName: "a", wantByPod: []PodInterface{},
		},
		{
			name: "replace same container drops old indexes", add: []PodInterface{a, aRenamed},
			wantList:  []PodInterface{aRenamed},
			container: "c1", wantByID: &aRenamed,
			hostIf: "pal00000001",
			podNS:  "ns1", podName: "a", wantByPod: []PodInterface{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore()
			for _, p := range tc.add {
				s.Add(p)
			}
			for _, id := range tc.del {
				s.Delete(id)
			}
			if diff := cmp.Diff(tc.wantList, s.List(), addrs); diff != "" {
				t.Errorf("List() (-want +got):\n%s", diff)
			}
			if got := s.Len(); got != len(tc.wantList) {
				t.Errorf("Len() = %d, want %d", got, len(tc.wantList))
			}
			checkLookup(t, "GetByContainerID", tc.wantByID)(s.GetByContainerID(tc.container))
			checkLookup(t, "GetByHostIfName", tc.wantByHost)(s.GetByHostIfName(tc.hostIf))
			if diff := cmp.Diff(tc.wantByPod, s.GetByPod(tc.podNS, tc.podName), addrs); diff != "" {
				t.Errorf("GetByPod() (-want +got):\n%s", diff)
			}
		})
	}
}

func checkLookup(t *testing.T, what string, want *PodInterface) func(PodInterface, bool) {
	return func(got PodInterface, ok bool) {
		t.Helper()
		if want == nil {
			if ok {
				t.Errorf("%s found %+v, want nothing", what, got)
			}
			return
		}
		if !ok {
			t.Errorf("%s found nothing, want %+v", what, *want)
			return
		}
		if diff := cmp.Diff(*want, got, addrs); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
}

func TestStoreReturnsCopies(t *testing.T) {
	s := NewStore()
	p := pod("ns", "a", "c1", "pal1")
	s.Add(p)
	p.MAC[0] = 0xff
	got, _ := s.GetByContainerID("c1")
	got.MAC[1] = 0xff
	again, _ := s.GetByContainerID("c1")
	if again.MAC.String() != "02:00:00:00:00:01" {
		t.Fatalf("store MAC changed through a caller's slice: %s", again.MAC)
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			id := string(rune('a' + i))
			for range 100 {
				s.Add(pod("ns", id, id, "pal"+id))
				s.GetByPod("ns", id)
				s.List()
				s.Delete(id)
			}
		})
	}
	wg.Wait()
	if s.Len() != 0 {
		t.Fatalf("Len() = %d after every interface was deleted", s.Len())
	}
}

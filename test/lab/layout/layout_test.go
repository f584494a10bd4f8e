package layout

import (
	"net/netip"
	"testing"
)

func TestNodeAddressing(t *testing.T) {
	underlay := netip.MustParsePrefix("198.18.0.0/24")
	tests := []struct {
		i                         int
		name, ip, netns, hostVeth string
	}{
		{1, "node1", "198.18.0.11", "plab-node1", "plab-n1"},
		{2, "node2", "198.18.0.12", "plab-node2", "plab-n2"},
		{MaxNodes, "node64", "198.18.0.74", "plab-node64", "plab-n64"},
	}
	for _, tc := range tests {
		if got := NodeName(tc.i); got != tc.name {
			t.Errorf("NodeName(%d) = %q, want %q", tc.i, got, tc.name)
		}
		ip := NodeIP(tc.i)
		if ip.String() != tc.ip {
			t.Errorf("NodeIP(%d) = %s, want %s", tc.i, ip, tc.ip)
		}
		if !underlay.Contains(ip) || ip == HostIP {
			t.Errorf("NodeIP(%d) = %s is not a node address in %s", tc.i, ip, underlay)
		}
		if got := NodeNetns(tc.i); got != tc.netns {
			t.Errorf("NodeNetns(%d) = %q, want %q", tc.i, got, tc.netns)
		}
		if got := HostVeth(tc.i); got != tc.hostVeth || len(got) > 15 {
			t.Errorf("HostVeth(%d) = %q, want %q (at most 15 bytes)", tc.i, got, tc.hostVeth)
		}
		back, err := NodeIndex(tc.name)
		if err != nil || back != tc.i {
			t.Errorf("NodeIndex(%q) = %d, %v; want %d", tc.name, back, err, tc.i)
		}
	}
}

func TestNodeIndexRejects(t *testing.T) {
	for _, name := range []string{"", "node", "node0", "node65", "node01", "nodex", "worker1", "node-1"} {
		if i, err := NodeIndex(name); err == nil {
			t.Errorf("NodeIndex(%q) = %d, want an error", name, i)
		}
	}
}

func TestValidateNodeCount(t *testing.T) {
	for n, ok := range map[int]bool{-1: false, 0: false, 1: true, MaxNodes: true, MaxNodes + 1: false} {
		if err := ValidateNodeCount(n); (err == nil) != ok {
			t.Errorf("ValidateNodeCount(%d) = %v, want ok=%v", n, err, ok)
		}
	}
}

func TestPodNetns(t *testing.T) {
	tests := []struct{ uid, want string }{
		{"0f4c1a2b-3d4e-5f60-7182-93a4b5c6d7e8", "plab-p0f4c1a2b3d4e"},
		{"abc", "plab-pabc"},
	}
	for _, tc := range tests {
		if got := PodNetns(tc.uid); got != tc.want {
			t.Errorf("PodNetns(%q) = %q, want %q", tc.uid, got, tc.want)
		}
	}
	// A pod namespace can never be mistaken for a node's.
	if PodNetns("de1") == NodeNetns(1) {
		t.Error("pod and node namespaces collide")
	}
}

func TestPaths(t *testing.T) {
	d := Dir("/tmp/plab")
	n := d.Node("node2")
	for got, want := range map[string]string{
		d.Kubeconfig(): "/tmp/plab/kubeconfig",
		d.Pids():       "/tmp/plab/pids",
		n.OVS():        "/tmp/plab/nodes/node2/ovs",
		n.CNISocket():  "/tmp/plab/nodes/node2/cni.sock",
		n.Pods():       "/tmp/plab/nodes/node2/pods.json",
		NetnsPath("x"): "/var/run/netns/x",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

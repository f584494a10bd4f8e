//go:build integration

package nodenet

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestIntegrationUplinkMTU finds the MTU of the interface holding an address,
// in a network namespace of its own.
func TestIntegrationUplinkMTU(t *testing.T) {
	const name = "paltest-mtu"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	for _, args := range [][]string{
		{"link", "add", "up0", "type", "veth", "peer", "name", "up1"},
		{"link", "set", "up0", "mtu", "1400", "up"},
		{"addr", "add", "198.18.200.1/24", "dev", "up0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	err := ns.WithNetNSPath("/run/netns/"+name, func(ns.NetNS) error {
		mtu, err := UplinkMTU(netip.MustParseAddr("198.18.200.1"))
		if err != nil {
			return err
		}
		if mtu != 1400 {
			t.Errorf("UplinkMTU = %d, want 1400", mtu)
		}
		if _, err := UplinkMTU(netip.MustParseAddr("198.18.200.2")); err == nil {
			t.Error("an address no interface holds must be an error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

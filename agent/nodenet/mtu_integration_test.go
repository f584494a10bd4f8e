//go:build integration

package nodenet

import (
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"palisade.dev/palisade/test/netnstest"
)

// TestIntegrationUplinkMTU finds the MTU of the interface holding an address,
// in a network namespace of its own.
func TestIntegrationUplinkMTU(t *testing.T) {
	name := netnstest.New(t, "paltest-mtu-")
	netnstest.Run(t, "ip", "-n", name, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	netnstest.Run(t, "ip", "-n", name, "link", "set", "up0", "mtu", "1400", "up")
	netnstest.Run(t, "ip", "-n", name, "addr", "add", "198.18.200.1/24", "dev", "up0")
	err := ns.WithNetNSPath(netnstest.Path(name), func(ns.NetNS) error {
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

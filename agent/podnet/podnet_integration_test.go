//go:build integration

package podnet

import (
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"palisade.dev/palisade/test/netnstest"
)

func TestSetupCheckTeardown(t *testing.T) {
	breakages := []struct {
		name    string
		breakIt func(t *testing.T, ns, hostIf string)
		wantErr string
	}{
		{name: "intact"},
		{name: "pod tx checksum on", breakIt: func(t *testing.T, ns, _ string) {
			netnstest.Run(t, "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "on")
		}, wantErr: "eth0 has transmit checksum offload on"},
		{name: "host tx checksum on", breakIt: func(t *testing.T, _, hostIf string) { netnstest.Run(t, "ethtool", "-K", hostIf, "tx", "on") }, wantErr: "has transmit checksum offload on"},
		{name: "no default route", breakIt: func(t *testing.T, ns, _ string) { netnstest.Run(t, "ip", "-n", ns, "route", "del", "default") }, wantErr: "no default route via 198.18.101.1"},
		{name: "address removed", breakIt: func(t *testing.T, ns, _ string) { netnstest.Run(t, "ip", "-n", ns, "addr", "flush", "dev", "eth0") }, wantErr: "does not have address 198.18.101.5/24"},
		{name: "pod end down", breakIt: func(t *testing.T, ns, _ string) { netnstest.Run(t, "ip", "-n", ns, "link", "set", "eth0", "down") }, wantErr: "eth0 is down"},
		{name: "host MTU changed", breakIt: func(t *testing.T, _, hostIf string) { netnstest.Run(t, "ip", "link", "set", hostIf, "mtu", "1400") }, wantErr: "MTU 1400, want 1450"},
	}
	for _, tc := range breakages {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t, "paltest-pn-")
			hostIf := HostIfName(ns, "eth0")
			t.Cleanup(func() {
				if err := Teardown(hostIf); err != nil {
					t.Error(err)
				}
			})
			cfg := testConfig("/run/netns/"+ns, hostIf)
			att, err := Setup(cfg)
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			if len(att.HostMAC) != 6 || len(att.PodMAC) != 6 {
				t.Fatalf("Setup returned MACs %v / %v", att.HostMAC, att.PodMAC)
			}
			if tc.breakIt != nil {
				tc.breakIt(t, ns, hostIf)
			}
			got, err := Check(cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check of an intact attachment: %v", err)
				}
				if got.PodMAC.String() != att.PodMAC.String() || got.HostMAC.String() != att.HostMAC.String() {
					t.Errorf("Check MACs %v/%v, Setup MACs %v/%v", got.HostMAC, got.PodMAC, att.HostMAC, att.PodMAC)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check = %v, want an error containing %q", err, tc.wantErr)
			}
			for range 2 {
				if err := Teardown(hostIf); err != nil {
					t.Fatalf("Teardown: %v", err)
				}
			}
			if exists, err := HostLinkExists(hostIf); err != nil || exists {
				t.Fatalf("after Teardown: exists=%v err=%v", exists, err)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	t.Run("missing netns", func(t *testing.T) {
		_, err := Setup(testConfig("/run/netns/paltest-does-not-exist", "paltestmissing"))
		var nsErr *NetNSError
		if !errors.As(err, &nsErr) || nsErr.Path != "/run/netns/paltest-does-not-exist" {
			t.Fatalf("Setup = %v, want a NetNSError", err)
		}
	})
	t.Run("pod interface exists", func(t *testing.T) {
		ns := netnstest.New(t, "paltest-pn-")
		netnstest.Run(t, "ip", "-n", ns, "link", "add", "eth0", "type", "bridge")
		hostIf := HostIfName(ns, "eth0")
		if _, err := Setup(testConfig("/run/netns/"+ns, hostIf)); err == nil {
			t.Fatal("Setup succeeded although eth0 exists in the pod")
		}
		if exists, _ := HostLinkExists(hostIf); exists {
			t.Fatalf("failed Setup left %s", hostIf)
		}
	})
	t.Run("teardown refuses a non-veth", func(t *testing.T) {
		name := HostIfName(netnstest.New(t, "paltest-pn-"), "br")
		netnstest.Run(t, "ip", "link", "add", name, "type", "bridge")
		t.Cleanup(func() {
			if link, err := netlink.LinkByName(name); err == nil {
				_ = netlink.LinkDel(link)
			}
		})
		if err := Teardown(name); err == nil || !strings.Contains(err.Error(), "not a veth") {
			t.Fatalf("Teardown of a bridge = %v", err)
		}
	})
}

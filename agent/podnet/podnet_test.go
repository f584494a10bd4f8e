package podnet

import (
	"net/netip"
	"strings"
	"testing"
)

func TestHostIfName(t *testing.T) {
	a := HostIfName("0123456789abcdef", "eth0")
	if len(a) != 11 || !strings.HasPrefix(a, "pal") {
		t.Fatalf("HostIfName = %q, want pal + 8 hex digits", a)
	}
	if a != HostIfName("0123456789abcdef", "eth0") {
		t.Error("HostIfName is not deterministic")
	}
	if a == HostIfName("0123456789abcdef", "eth1") || a == HostIfName("0123456789abcdeg", "eth0") {
		t.Error("HostIfName does not depend on both container ID and interface name")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func() Config { return testConfig("/run/netns/x", "palx") }
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{name: "ok", change: func(*Config) {}},
		{name: "no netns", change: func(c *Config) { c.Netns = "" }, wantErr: "namespace path is empty"},
		{name: "long ifname", change: func(c *Config) { c.IfName = "averyveryverylongname" }, wantErr: "pod interface name"},
		{name: "no host ifname", change: func(c *Config) { c.HostIfName = "" }, wantErr: "host interface name"},
		{name: "bad MTU", change: func(c *Config) { c.MTU = 9 }, wantErr: "MTU 9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.change(&c)
			err := c.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func testConfig(netns, hostIf string) Config {
	return Config{
		Netns: netns, IfName: "eth0", HostIfName: hostIf,
		Addr: netip.MustParsePrefix("198.18.101.5/24"), Gateway: netip.MustParseAddr("198.18.101.1"), MTU: 1450,
	}
}

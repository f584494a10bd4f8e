package nodenet

import (
	"net/netip"
	"strings"
	"testing"
)

func TestConfigComplete(t *testing.T) {
	good := Config{PodCIDR: netip.MustParsePrefix("198.19.1.0/24"), TunnelType: TunnelGeneve, MTU: 1450}
	c := good
	if err := c.complete(); err != nil || c.GatewayName != DefaultGatewayName || c.TunnelName != DefaultTunnelName {
		t.Fatalf("complete(%+v) = %v, names %q %q", good, err, c.GatewayName, c.TunnelName)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"IPv6", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("2001:db8::/64") }, "not an IPv4 prefix"},
		{"too small", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("198.19.1.0/31") }, "at least 4 addresses"},
		{"tunnel type", func(c *Config) { c.TunnelType = "gre" }, "tunnel type"},
		{"MTU", func(c *Config) { c.MTU = 100 }, "MTU"},
		{"long name", func(c *Config) { c.GatewayName = "a-very-long-gateway" }, "at most 15 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.change(&c)
			if err := c.complete(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("complete() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestGatewayIP(t *testing.T) {
	for cidr, want := range map[string]string{"198.19.1.0/24": "198.19.1.1", "198.19.1.77/24": "198.19.1.1", "198.18.64.0/18": "198.18.64.1"} {
		if got := GatewayIP(netip.MustParsePrefix(cidr)); got.String() != want {
			t.Errorf("GatewayIP(%s) = %s, want %s", cidr, got, want)
		}
	}
}

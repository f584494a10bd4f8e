// Package nodenet sets up the node's own side of the pod network: the
// gateway (an OVS internal port holding the first address of the node's pod
// CIDR, which is every local pod's default gateway and gives the node its
// route to the pod CIDR), the flow-based tunnel port to the other nodes,
// and the node's routes to remote pod CIDRs through the gateway. It talks to
// OVSDB (through ovsconfig) and to the kernel of the agent's network
// namespace (netlink); the flows are agent/openflow's.
package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/agent/podnet"
	"palisade.dev/palisade/ovs/ovsconfig"
)

// Default port names.
const (
	DefaultGatewayName = "palisade-gw0"
	DefaultTunnelName  = "palisade-tun0"
)

// Tunnel types: both carry the pod's Ethernet frame over UDP to the remote
// node's transport address, chosen per packet by the flows (tun_dst).
const (
	TunnelGeneve = "geneve"
	TunnelVXLAN  = "vxlan"
)

// linkTimeout bounds the wait for OVS's internal port to appear in the
// kernel.
const linkTimeout = 10 * time.Second

// Config describes the node's network.
type Config struct {
	PodCIDR netip.Prefix
	// GatewayName and TunnelName are the OVS port names
	// (DefaultGatewayName, DefaultTunnelName when empty).
	GatewayName string
	TunnelName  string
	// TunnelType is TunnelGeneve or TunnelVXLAN.
	TunnelType string
	// MTU of the gateway interface: the pods' MTU.
	MTU int
}

// PortManager creates the node's ports (ovsconfig.Client).
type PortManager interface {
	EnsurePort(ctx context.Context, spec ovsconfig.PortSpec) (ovsconfig.Port, error)
}

func (c *Config) complete() error {
	if c.GatewayName == "" {
		c.GatewayName = DefaultGatewayName
	}
	if c.TunnelName == "" {
		c.TunnelName = DefaultTunnelName
	}
	switch {
	case !c.PodCIDR.IsValid() || !c.PodCIDR.Addr().Is4() || c.PodCIDR.Bits() > 30:
		return fmt.Errorf("nodenet: pod CIDR %s is not an IPv4 prefix of at least 4 addresses", c.PodCIDR)
	case c.TunnelType != TunnelGeneve && c.TunnelType != TunnelVXLAN:
		return fmt.Errorf("nodenet: tunnel type %q: want %s or %s", c.TunnelType, TunnelGeneve, TunnelVXLAN)
	case c.MTU < 576 || c.MTU > 9000:
		return fmt.Errorf("nodenet: MTU %d is out of range [576, 9000]", c.MTU)
	case len(c.GatewayName) > 15 || len(c.TunnelName) > 15:
		return fmt.Errorf("nodenet: port names %q, %q must have at most 15 bytes", c.GatewayName, c.TunnelName)
	}
	return nil
}

// GatewayIP is the gateway's address in podCIDR: its first host address.
func GatewayIP(podCIDR netip.Prefix) netip.Addr { return podCIDR.Masked().Addr().Next() }

// Setup makes the gateway and tunnel ports exist as cfg describes (it is
// idempotent, so an agent restart finds them as they were) and configures
// the gateway's kernel interface: MAC, MTU, address (which gives the node
// its route to the pod CIDR), up, transmit checksum offload off. It returns
// what the flows need.
func Setup(ctx context.Context, ports PortManager, cfg Config) (*openflow.NodeNetwork, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	gwIP := GatewayIP(cfg.PodCIDR)
	gwMAC := openflow.GatewayMAC(gwIP)
	gw, err := ports.EnsurePort(ctx, ovsconfig.PortSpec{
		Name: cfg.GatewayName, Type: "internal", MAC: gwMAC.String(),
		ExternalIDs: map[string]string{interfacestore.ExternalIDInterfaceType: interfacestore.InterfaceTypeGateway},
	})
	if err != nil {
		return nil, fmt.Errorf("nodenet: gateway port: %w", err)
	}
	if err := configureGateway(ctx, cfg, gwIP, gwMAC); err != nil {
		return nil, err
	}
	tun, err := ports.EnsurePort(ctx, ovsconfig.PortSpec{
		Name: cfg.TunnelName, Type: cfg.TunnelType,
		Options:     map[string]string{"remote_ip": "flow", "key": "flow"},
		ExternalIDs: map[string]string{interfacestore.ExternalIDInterfaceType: interfacestore.InterfaceTypeTunnel},
	})
	if err != nil {
		return nil, fmt.Errorf("nodenet: tunnel port: %w", err)
	}
	n := &openflow.NodeNetwork{
		PodCIDR: cfg.PodCIDR.Masked(), GatewayPort: uint32(gw.OFPort), GatewayIP: gwIP, GatewayMAC: gwMAC,
		TunnelPort: uint32(tun.OFPort),
	}
	if err := n.Validate(); err != nil {
		return nil, fmt.Errorf("nodenet: %w", err)
	}
	klog.FromContext(ctx).Info("Node network ready", "gateway", cfg.GatewayName, "gatewayIP", gwIP, "gatewayMAC", gwMAC,
		"gatewayPort", gw.OFPort, "tunnel", cfg.TunnelName, "tunnelType", cfg.TunnelType, "tunnelPort", tun.OFPort)
	return n, nil
}

// configureGateway waits for the internal port's kernel interface and sets
// it up. Addresses of other prefixes on it are removed (a pod CIDR that
// changed while the node was down).
func configureGateway(ctx context.Context, cfg Config, ip netip.Addr, mac net.HardwareAddr) error {
	link, err := waitForLink(ctx, cfg.GatewayName)
	if err != nil {
		return err
	}
	name := cfg.GatewayName
	if link.Attrs().HardwareAddr.String() != mac.String() {
		// OVS applies Interface.mac itself; this covers a device it made
		// before the column was set.
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("nodenet: setting the MAC of %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("nodenet: setting the MTU of %s: %w", name, err)
		}
	}
	want := netip.PrefixFrom(ip, cfg.PodCIDR.Bits())
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("nodenet: listing addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if got, ok := netip.AddrFromSlice(a.IP); ok && netip.PrefixFrom(got.Unmap(), ones) == want {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return fmt.Errorf("nodenet: removing stale address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(want)}); err != nil {
		return fmt.Errorf("nodenet: adding %s to %s: %w", want, name, err)
	}
	if err := podnet.DisableTxChecksum(name); err != nil {
		return fmt.Errorf("nodenet: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("nodenet: setting %s up: %w", name, err)
	}
	return nil
}

func waitForLink(ctx context.Context, name string) (netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, linkTimeout)
	defer cancel()
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		if !errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil, fmt.Errorf("nodenet: looking up %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("nodenet: interface %s did not appear (is ovs-vswitchd running in this network namespace?): %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SyncRoutes makes the node's routes to remote pod CIDRs exactly those of
// nodes: each through the gateway, with the remote gateway IP as an on-link
// next hop whose neighbor entry is VirtualMAC (the flows send whatever the
// gateway sends to a remote pod CIDR into the tunnel). Routes and neighbors
// on the gateway for nodes that left are removed.
func SyncRoutes(ctx context.Context, gatewayName string, local netip.Prefix, nodes []openflow.RemoteNode) error {
	if gatewayName == "" {
		gatewayName = DefaultGatewayName
	}
	link, err := netlink.LinkByName(gatewayName)
	if err != nil {
		return fmt.Errorf("nodenet: looking up %s: %w", gatewayName, err)
	}
	idx := link.Attrs().Index
	want := map[netip.Prefix]netip.Addr{}
	for _, n := range nodes {
		cidr := n.PodCIDR.Masked()
		if !cidr.Addr().Is4() || cidr.Overlaps(local) {
			continue
		}
		want[cidr] = GatewayIP(cidr)
	}
	var errs []error
	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("nodenet: listing routes of %s: %w", gatewayName, err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Gw == nil {
			continue // the connected route to the local pod CIDR
		}
		ones, _ := r.Dst.Mask.Size()
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		if _, ok := want[netip.PrefixFrom(dst.Unmap(), ones)]; ok {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("nodenet: deleting route %s: %w", r.Dst, err))
		}
	}
	neighs, err := neighList(idx)
	if err != nil {
		return fmt.Errorf("nodenet: listing neighbors of %s: %w", gatewayName, err)
	}
	nextHops := map[netip.Addr]bool{}
	for _, gw := range want {
		nextHops[gw] = true
	}
	for _, n := range neighs {
		ip, _ := netip.AddrFromSlice(n.IP)
		if n.State&netlink.NUD_PERMANENT == 0 || nextHops[ip.Unmap()] {
			continue
		}
		if err := netlink.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("nodenet: deleting neighbor %s: %w", n.IP, err))
		}
	}
	cidrs := make([]netip.Prefix, 0, len(want))
	for c := range want {
		cidrs = append(cidrs, c)
	}
	slices.SortFunc(cidrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, cidr := range cidrs {
		gw := want[cidr]
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: gw.AsSlice(), HardwareAddr: openflow.VirtualMAC}); err != nil {
			errs = append(errs, fmt.Errorf("nodenet: neighbor %s: %w", gw, err))
			continue
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: ipNet(cidr), Gw: gw.AsSlice(),
			Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			errs = append(errs, fmt.Errorf("nodenet: route %s via %s: %w", cidr, gw, err))
		}
	}
	warmTunnelNeighbors(ctx, nodes)
	return errors.Join(errs...)
}

// warmTunnelNeighbors makes the node's kernel resolve every remote node's
// transport address. The userspace datapath's native tunneling learns the
// outer destination MAC by snooping ARP on the bridge that holds the node's
// address, and drops a tunnel packet whose neighbor it does not know yet
// (the first SYN towards a new node would otherwise cost a retransmission).
// One datagram to the discard port is enough to trigger the resolution.
func warmTunnelNeighbors(ctx context.Context, nodes []openflow.RemoteNode) {
	for _, n := range nodes {
		conn, err := net.Dial("udp4", net.JoinHostPort(n.IP.String(), "9"))
		if err == nil {
			_, err = conn.Write([]byte{0})
			conn.Close()
		}
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Could not warm the tunnel neighbor", "node", n.Name, "ip", n.IP, "err", err)
		}
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// neighList lists the IPv4 neighbors of link idx, retrying a dump the
// kernel interrupted (netlink.ErrDumpInterrupted: the table changed while
// it was read), as netlinksafe does for the other lists.
func neighList(idx int) ([]netlink.Neigh, error) {
	var (
		neighs []netlink.Neigh
		err    error
	)
	for range 10 {
		if neighs, err = netlink.NeighList(idx, netlink.FAMILY_V4); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return neighs, err
}

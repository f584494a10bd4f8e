// Package podnet does the kernel plumbing of a pod attachment: a veth pair
// between the pod's network namespace and the node, the pod end's name,
// MTU, address, default route and offloads. It does not touch OVS.
package podnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// hostIfPrefix starts every host-side veth name Palisade creates.
const hostIfPrefix = "pal"

// HostIfName returns the name of the host end of a pod's veth: "pal" and 8
// hex digits of a hash of the container ID and interface name (11 bytes, so
// within the kernel's 15).
func HostIfName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostIfPrefix + hex.EncodeToString(sum[:4])
}

// Config describes one pod attachment.
type Config struct {
	// Netns is the path of the pod's network namespace.
	Netns string
	// IfName is the interface name inside the pod (e.g. eth0).
	IfName string
	// HostIfName is the name of the veth end on the node.
	HostIfName string
	// Addr is the pod's address with the pod CIDR's prefix length.
	Addr netip.Prefix
	// Gateway is the default route's next hop (on-link).
	Gateway netip.Addr
	MTU     int
}

func (c *Config) validate() error {
	switch {
	case c.Netns == "":
		return errors.New("podnet: network namespace path is empty")
	case c.IfName == "" || len(c.IfName) > 15:
		return fmt.Errorf("podnet: pod interface name %q must have 1 to 15 bytes", c.IfName)
	case c.HostIfName == "" || len(c.HostIfName) > 15 || strings.ContainsAny(c.HostIfName, "/ "):
		return fmt.Errorf("podnet: host interface name %q must have 1 to 15 bytes", c.HostIfName)
	case !c.Addr.IsValid() || !c.Addr.Addr().Is4():
		return fmt.Errorf("podnet: pod address %s is not an IPv4 prefix", c.Addr)
	case !c.Gateway.Is4():
		return fmt.Errorf("podnet: gateway %s is not an IPv4 address", c.Gateway)
	case c.MTU < 68 || c.MTU > 65535:
		return fmt.Errorf("podnet: MTU %d is out of range [68, 65535]", c.MTU)
	}
	return nil
}

// Attachment is what Setup created, or what Check found.
type Attachment struct {
	HostMAC net.HardwareAddr
	PodMAC  net.HardwareAddr
}

// NetNSError is returned when the pod's network namespace cannot be opened.
type NetNSError struct {
	Path string
	Err  error
}

func (e *NetNSError) Error() string {
	return fmt.Sprintf("cannot open network namespace %q: %v", e.Path, e.Err)
}

func (e *NetNSError) Unwrap() error { return e.Err }

// Setup creates the veth pair with the pod end named cfg.IfName inside the
// pod's namespace and the other end cfg.HostIfName in the current (node)
// namespace, then configures both ends. On failure it removes what it
// created.
func Setup(cfg Config) (Attachment, error) {
	if err := cfg.validate(); err != nil {
		return Attachment{}, err
	}
	podNS, err := ns.GetNS(cfg.Netns)
	if err != nil {
		return Attachment{}, &NetNSError{Path: cfg.Netns, Err: err}
	}
	defer podNS.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return Attachment{}, fmt.Errorf("podnet: opening the node's network namespace: %w", err)
	}
	defer hostNS.Close()

	var att Attachment
	created := false
	err = podNS.Do(func(ns.NetNS) error {
		hostVeth, podVeth, err := ip.SetupVethWithName(cfg.IfName, cfg.HostIfName, cfg.MTU, "", hostNS)
		if err != nil {
			return fmt.Errorf("creating veth pair %s (pod) / %s (node): %w", cfg.IfName, cfg.HostIfName, err)
		}
		created = true
		att.HostMAC, att.PodMAC = hostVeth.HardwareAddr, podVeth.HardwareAddr
		return configurePodEnd(cfg)
	})
	if err == nil {
		err = setTxChecksum(cfg.HostIfName, false)
	}
	if err == nil {
		err = ignoreARP(cfg.HostIfName)
	}
	if err != nil {
		if created {
			if derr := Teardown(cfg.HostIfName); derr != nil {
				err = fmt.Errorf("%w (and removing the veth pair failed: %v)", err, derr)
			}
		}
		return Attachment{}, fmt.Errorf("podnet: %w", err)
	}
	return att, nil
}

// configurePodEnd runs inside the pod's namespace.
func configurePodEnd(cfg Config) error {
	link, err := netlinksafe.LinkByName(cfg.IfName)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", cfg.IfName, err)
	}
	addr := &netlink.Addr{IPNet: toIPNet(cfg.Addr)}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding address %s to %s: %w", cfg.Addr, cfg.IfName, err)
	}
	if err := setTxChecksum(cfg.IfName, false); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", cfg.IfName, err)
	}
	lo, err := netlinksafe.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("looking up lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("setting lo up: %w", err)
	}
	if err := netlink.RouteAdd(defaultRoute(link.Attrs().Index, cfg.Gateway)); err != nil {
		return fmt.Errorf("adding default route via %s dev %s: %w", cfg.Gateway, cfg.IfName, err)
	}
	return nil
}

// ignoreARP stops the node's kernel from answering ARP requests that
// arrive on the host end of a pod's veth. The host end is an OVS port, but
// the kernel sees its packets too, and would otherwise answer a pod asking
// for the gateway's IP (a local address of the node) with the veth's MAC,
// racing the gateway's answer through OVS.
func ignoreARP(hostIfName string) error {
	path := filepath.Join("/proc/sys/net/ipv4/conf", hostIfName, "arp_ignore")
	// 8: do not reply for any local address.
	if err := os.WriteFile(path, []byte("8"), 0o644); err != nil {
		return fmt.Errorf("disabling ARP replies on %s: %w", hostIfName, err)
	}
	return nil
}

// Teardown deletes the host end of a pod's veth pair, which deletes the pod
// end too. A missing interface is not an error; an interface of that name
// that is not a veth is left alone and reported.
func Teardown(hostIfName string) error {
	link, err := netlinksafe.LinkByName(hostIfName)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("podnet: looking up %s: %w", hostIfName, err)
	}
	if _, ok := link.(*netlink.Veth); !ok {
		return fmt.Errorf("podnet: %s is a %s, not a veth: not deleting it", hostIfName, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("podnet: deleting %s: %w", hostIfName, err)
	}
	return nil
}

// HostLinkExists reports whether a veth named hostIfName exists on the node.
func HostLinkExists(hostIfName string) (bool, error) {
	link, err := netlinksafe.LinkByName(hostIfName)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return false, nil
		}
		return false, fmt.Errorf("podnet: looking up %s: %w", hostIfName, err)
	}
	_, isVeth := link.(*netlink.Veth)
	return isVeth, nil
}

// Check verifies that the attachment described by cfg is in place: both
// veth ends, peered, up, with the MTU, the pod address, the default route
// and transmit checksum offload off.
func Check(cfg Config) (Attachment, error) {
	if err := cfg.validate(); err != nil {
		return Attachment{}, err
	}
	hostLink, peerIndex, err := ip.GetVethPeerIfindex(cfg.HostIfName)
	if err != nil {
		return Attachment{}, fmt.Errorf("podnet: host end: %w", err)
	}
	if err := checkLink(hostLink, cfg.MTU); err != nil {
		return Attachment{}, fmt.Errorf("podnet: %w", err)
	}
	att := Attachment{HostMAC: hostLink.Attrs().HardwareAddr}
	podNS, err := ns.GetNS(cfg.Netns)
	if err != nil {
		return Attachment{}, &NetNSError{Path: cfg.Netns, Err: err}
	}
	defer podNS.Close()
	err = podNS.Do(func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(cfg.IfName)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", cfg.IfName, err)
		}
		if link.Attrs().Index != peerIndex {
			return fmt.Errorf("%s (index %d) is not the peer of %s (peer index %d)", cfg.IfName, link.Attrs().Index, cfg.HostIfName, peerIndex)
		}
		if err := checkLink(link, cfg.MTU); err != nil {
			return err
		}
		att.PodMAC = link.Attrs().HardwareAddr
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", cfg.IfName, err)
		}
		if !hasAddr(addrs, cfg.Addr) {
			return fmt.Errorf("%s does not have address %s", cfg.IfName, cfg.Addr)
		}
		routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("listing routes of %s: %w", cfg.IfName, err)
		}
		if !hasDefaultRoute(routes, cfg.Gateway) {
			return fmt.Errorf("%s has no default route via %s", cfg.IfName, cfg.Gateway)
		}
		return checkTxChecksumOff(cfg.IfName)
	})
	if err == nil {
		err = checkTxChecksumOff(cfg.HostIfName)
	}
	if err != nil {
		return Attachment{}, fmt.Errorf("podnet: %w", err)
	}
	return att, nil
}

func checkLink(link netlink.Link, mtu int) error {
	a := link.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return fmt.Errorf("%s is down", a.Name)
	}
	if a.MTU != mtu {
		return fmt.Errorf("%s has MTU %d, want %d", a.Name, a.MTU, mtu)
	}
	return nil
}

func checkTxChecksumOff(ifName string) error {
	on, err := txChecksum(ifName)
	if err != nil {
		return err
	}
	if on {
		return fmt.Errorf("%s has transmit checksum offload on", ifName)
	}
	return nil
}

func hasAddr(addrs []netlink.Addr, want netip.Prefix) bool {
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == want.Addr() && ones == want.Bits() {
			return true
		}
	}
	return false
}

func hasDefaultRoute(routes []netlink.Route, gw netip.Addr) bool {
	for _, r := range routes {
		if !ip.IsIPNetZero(r.Dst) {
			continue
		}
		if got, ok := netip.AddrFromSlice(r.Gw); ok && got.Unmap() == gw {
			return true
		}
	}
	return false
}

func defaultRoute(linkIndex int, gw netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		Gw:        gw.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
	}
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

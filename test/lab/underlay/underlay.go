// Package underlay builds and removes the lab's physical network: the
// host bridge plab0 holding layout.HostIP, and per node a named network
// namespace joined to the bridge by a veth whose inner end is eth0 with the
// node's address. Network namespaces are made with `ip netns` so that they
// are visible to processes started later with `ip netns exec`.
package underlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/test/lab/layout"
)

// Create makes the bridge and n nodes. It fails if the bridge already
// exists (another lab owns it). On failure the caller runs Destroy.
func Create(ctx context.Context, n int) error {
	if err := layout.ValidateNodeCount(n); err != nil {
		return err
	}
	if _, err := netlink.LinkByName(layout.Bridge); err == nil {
		return fmt.Errorf("bridge %s already exists: another lab is running (or crashed); run palisade-lab down", layout.Bridge)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: layout.Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", layout.Bridge, err)
	}
	if err := netlink.AddrAdd(br, addr(layout.HostIP)); err != nil {
		return fmt.Errorf("address %s on %s: %w", layout.HostIP, layout.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("set %s up: %w", layout.Bridge, err)
	}
	for i := 1; i <= n; i++ {
		if err := createNode(ctx, br, i); err != nil {
			return fmt.Errorf("node %s: %w", layout.NodeName(i), err)
		}
	}
	return nil
}

func addr(ip netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(layout.UnderlayPrefixLen, 32)}}
}

func createNode(ctx context.Context, br netlink.Link, i int) error {
	name := layout.NodeNetns(i)
	if err := CreateNetns(ctx, name); err != nil {
		return err
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: layout.HostVeth(i), MasterIndex: br.Attrs().Index},
		PeerName:      layout.NodeIfName,
		PeerNamespace: netlink.NsFd(ns),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", veth.Name, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", veth.Name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", name, err)
	}
	defer h.Close()
	link, err := h.LinkByName(layout.NodeIfName)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", layout.NodeIfName, name, err)
	}
	if err := h.AddrAdd(link, addr(layout.NodeIP(i))); err != nil {
		return fmt.Errorf("address %s on %s: %w", layout.NodeIP(i), layout.NodeIfName, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", layout.NodeIfName, name, err)
	}
	// The userspace datapath mangles packets with offloaded checksums.
	if err := run(ctx, "ethtool", "-K", veth.Name, "tx", "off"); err != nil {
		return err
	}
	return run(ctx, "ip", "netns", "exec", name, "ethtool", "-K", layout.NodeIfName, "tx", "off")
}

// Destroy deletes every lab network namespace (nodes and pods), every node
// veth and the bridge. It works from whatever exists, so it is safe after a
// crash and idempotent.
func Destroy(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	var errs []error
	names, err := ListNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		logger.V(2).Info("Deleting network namespace", "netns", name)
		if err := DeleteNetns(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if name != layout.Bridge && !strings.HasPrefix(name, layout.HostVethPrefix) {
			continue
		}
		logger.V(2).Info("Deleting link", "link", name)
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			// A veth vanishes with its peer's namespace; only report
			// links that are still there.
			if _, lerr := netlink.LinkByName(name); lerr == nil {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Leftovers lists lab network objects that exist (namespaces and links),
// for checks that everything was removed.
func Leftovers() ([]string, error) {
	names, err := ListNetns()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		out = append(out, "netns "+n)
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if name := l.Attrs().Name; name == layout.Bridge || strings.HasPrefix(name, layout.HostVethPrefix) {
			out = append(out, "link "+name)
		}
	}
	return out, nil
}

// ListNetns returns the names of the lab's network namespaces.
func ListNetns() ([]string, error) {
	entries, err := os.ReadDir(layout.NetnsPath(""))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), layout.NetnsPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// CreateNetns makes a named network namespace with lo up.
func CreateNetns(ctx context.Context, name string) error {
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	return run(ctx, "ip", "-n", name, "link", "set", "lo", "up")
}

// DeleteNetns removes a named network namespace; a missing one is fine.
func DeleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(layout.NetnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run(ctx, "ip", "netns", "delete", name)
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

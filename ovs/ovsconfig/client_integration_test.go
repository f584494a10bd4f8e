//go:build integration

package ovsconfig

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"palisade.dev/palisade/test/netnstest"
	"palisade.dev/palisade/test/ovsinstance"
)

// startOVS runs a private OVS in a fresh network namespace and returns it
// with a netlink handle for that namespace.
func startOVS(t *testing.T, ctx context.Context, prefix string) (*ovsinstance.Instance, *netlink.Handle) {
	t.Helper()
	ns := netnstest.New(t, prefix+"-")
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	t.Cleanup(func() { nsh.Close() })
	nl, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	t.Cleanup(nl.Close)

	dir, err := os.MkdirTemp("", "ovscfg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Netns: ns})
	if err != nil {
		t.Fatalf("start OVS: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("stop OVS: %v", err)
		}
	})
	return inst, nl
}

func TestBridgeConfigWithRealOVS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, nl := startOVS(t, ctx, "ovscfg-test")

	c, err := New(ctx, inst.DBEndpoint, "br-int", "netdev")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)

	// EnsureBridge is idempotent.
	for i := range 2 {
		if err := c.EnsureBridge(ctx); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
	}
	vsctl := func(args ...string) string {
		t.Helper()
		out, err := inst.Vsctl(args...)
		if err != nil {
			t.Fatalf("%v", err)
		}
		return strings.TrimSpace(out)
	}
	if got := vsctl("list-br"); got != "br-int" {
		t.Fatalf("bridges = %q, want br-int", got)
	}
	got := vsctl("get", "bridge", "br-int", "datapath_type", "fail_mode", "protocols", "external_ids:palisade-owner")
	if want := "netdev\nsecure\n[OpenFlow15]\npalisade"; got != want {
		t.Fatalf("bridge settings = %q, want %q", got, want)
	}
	if _, err := os.Stat(inst.MgmtSock); err != nil {
		t.Fatalf("EnsureBridge returned before the management socket existed: %v", err)
	}

	// Table names show up in ovs-ofctl and are replaced as a whole.
	if err := c.SetTableNames(ctx, map[uint8]string{0: "Classifier", 3: "IngressRule"}); err != nil {
		t.Fatalf("SetTableNames: %v", err)
	}
	if _, err := inst.Ofctl("add-flow", "table=IngressRule,priority=7,ip,actions=drop"); err != nil {
		t.Fatalf("add-flow to a named table: %v", err)
	}
	flows, err := inst.DumpFlows("br-int")
	if err != nil {
		t.Fatal(err)
	}
	if want := "table=IngressRule, priority=7,ip actions=drop"; len(flows) != 1 || flows[0] != want {
		t.Fatalf("flows = %q, want [%q]", flows, want)
	}
	if err := c.SetTableNames(ctx, map[uint8]string{0: "Classifier", 4: "Output"}); err != nil {
		t.Fatalf("SetTableNames (replace): %v", err)
	}
	rows := strings.Fields(vsctl("--bare", "--columns=name", "list", "flow_table"))
	slices.Sort(rows)
	if want := []string{"Classifier", "Output"}; !slices.Equal(rows, want) {
		t.Fatalf("Flow_Table rows = %q, want %q (old rows garbage-collected)", rows, want)
	}
	if _, err := inst.Ofctl("add-flow", "table=Output,priority=9,actions=drop"); err != nil {
		t.Fatalf("add-flow to table Output: %v", err)
	}
	out, err := inst.Ofctl("--no-stats", "dump-flows", "table=4")
	if err != nil || !strings.Contains(out, "priority=9") {
		t.Fatalf("flow added to table Output is not in table 4: %q, %v", out, err)
	}
	if _, err := inst.Ofctl("add-flow", "table=IngressRule,priority=7,ip,actions=drop"); err == nil {
		t.Fatalf("the replaced table name IngressRule is still accepted")
	}
	if err := c.SetTableNames(ctx, map[uint8]string{1: "9lives"}); err == nil {
		t.Errorf("SetTableNames accepted a name starting with a digit")
	}

	// A veth-backed port and an internal port.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pvtest0"}, PeerName: "pvtest1"}
	if err := nl.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() { _ = nl.LinkDel(veth) })
	if err := nl.LinkSetUp(veth); err != nil {
		t.Fatalf("set veth up: %v", err)
	}
	podIDs := map[string]string{"palisade-pod-name": "a", "palisade-pod-namespace": "ns1"}
	vethPort, err := c.CreatePort(ctx, "pvtest0", "", podIDs)
	if err != nil {
		t.Fatalf("CreatePort veth: %v", err)
	}
	gwPort, err := c.CreatePort(ctx, "pvgw0", "internal", map[string]string{"palisade-role": "gateway"})
	if err != nil {
		t.Fatalf("CreatePort internal: %v", err)
	}
	if vethPort.OFPort <= 0 || gwPort.OFPort <= 0 || vethPort.OFPort == gwPort.OFPort {
		t.Fatalf("ofports %d and %d, want distinct positive numbers", vethPort.OFPort, gwPort.OFPort)
	}
	if got := vsctl("get", "interface", "pvtest0", "ofport"); got != strconv.Itoa(int(vethPort.OFPort)) {
		t.Fatalf("OVSDB ofport of pvtest0 = %s, CreatePort said %d", got, vethPort.OFPort)
	}
	again, err := c.CreatePort(ctx, "pvtest0", "", podIDs)
	if err != nil || again.OFPort != vethPort.OFPort {
		t.Fatalf("CreatePort of an existing port = %+v, %v; want ofport %d", again, err, vethPort.OFPort)
	}
	_, err = c.CreatePort(ctx, "pvmissing", "", nil)
	if err == nil || !strings.Contains(err.Error(), "could not open network device pvmissing") {
		t.Fatalf("CreatePort of a missing device: err = %v, want OVS's error for the device", err)
	}
	t.Logf("CreatePort of a missing device fails as expected: %v", err)

	assertPorts := func(match map[string]string, want ...string) {
		t.Helper()
		ports, err := c.ListPorts(ctx, match)
		if err != nil {
			t.Fatalf("ListPorts(%v): %v", match, err)
		}
		var names []string
		for _, p := range ports {
			names = append(names, p.Name)
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Fatalf("ListPorts(%v) = %q, want %q", match, names, want)
		}
	}
	assertPorts(map[string]string{"palisade-pod-name": "a"}, "pvtest0")
	assertPorts(map[string]string{OwnerKey: OwnerValue}, "pvgw0", "pvtest0")
	assertPorts(nil, "br-int", "pvgw0", "pvtest0") // the failed pvmissing was removed

	// The client survives an OVS restart: it reconnects and rebuilds its cache.
	if err := inst.Restart(ctx); err != nil {
		t.Fatalf("restart OVS: %v", err)
	}
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge after restart: %v", err)
	}
	assertPorts(map[string]string{OwnerKey: OwnerValue}, "pvgw0", "pvtest0")

	for i := range 2 {
		if err := c.DeletePort(ctx, "pvtest0"); err != nil {
			t.Fatalf("DeletePort #%d: %v", i+1, err)
		}
	}
	if err := c.DeletePort(ctx, "pvgw0"); err != nil {
		t.Fatalf("DeletePort pvgw0: %v", err)
	}
	assertPorts(nil, "br-int")
	if got := vsctl("list-ports", "br-int"); got != "" {
		t.Fatalf("ovs-vsctl list-ports = %q, want none", got)
	}
}

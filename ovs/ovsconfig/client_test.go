package ovsconfig

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/database/inmemory"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"
	"github.com/ovn-kubernetes/libovsdb/server"

	"palisade.dev/palisade/ovs/ovsconfig/vswitchd"
)

// fakeOVS is an in-memory ovsdb-server plus a stand-in for ovs-vswitchd
// that assigns ofports (or an error, for interfaces named "bad*") and
// copies next_cfg to cur_cfg.
type fakeOVS struct {
	endpoint string
	db       client.Client // the fake vswitchd's own connection
}

func startFakeOVS(t *testing.T) *fakeOVS {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	full, err := vswitchd.FullDatabaseModel()
	if err != nil {
		t.Fatal(err)
	}
	dbModel, errs := model.NewDatabaseModel(vswitchd.Schema(), full)
	if len(errs) > 0 {
		t.Fatalf("database model: %v", errs)
	}
	logger := logr.Discard()
	srv, err := server.NewOvsdbServer(inmemory.NewDatabase(map[string]model.ClientDBModel{"Open_vSwitch": full}, &logger), &logger, dbModel)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "db.sock")
	go func() { _ = srv.Serve("unix", sock) }()
	t.Cleanup(srv.Close)
	deadline := time.Now().Add(5 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("in-memory OVSDB server not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatal(err)
	}
	f := &fakeOVS{endpoint: "unix:" + sock}
	f.db, err = client.NewOVSDBClient(full, client.WithEndpoint(f.endpoint), client.WithLogger(&logger))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.db.Close)
	if _, err := f.db.MonitorAll(ctx); err != nil {
		t.Fatal(err)
	}
	// The database as `ovs-vsctl init` leaves it.
	ops, err := f.db.Create(&vswitchd.OpenvSwitch{UUID: "root"})
	if err != nil {
		t.Fatal(err)
	}
	f.transact(t, ctx, ops)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.runVswitchd(ctx) }()
	t.Cleanup(wg.Wait)
	t.Cleanup(cancel) // runs before wg.Wait
	return f
}

func (f *fakeOVS) transact(t *testing.T, ctx context.Context, ops []ovsdb.Operation) {
	t.Helper()
	if _, err := f.db.Transact(ctx, ops...); err != nil {
		t.Fatalf("transact: %v", err)
	}
}

// runVswitchd applies configuration changes until ctx ends.
func (f *fakeOVS) runVswitchd(ctx context.Context) {
	nextOFPort := 1
	for ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		var roots []vswitchd.OpenvSwitch
		if err := f.db.List(ctx, &roots); err != nil || len(roots) != 1 || roots[0].CurCfg == roots[0].NextCfg {
			continue
		}
		root := roots[0]
		var ifaces []vswitchd.Interface
		if err := f.db.List(ctx, &ifaces); err != nil {
			continue
		}
		var ops []ovsdb.Operation
		for _, iface := range ifaces {
			if iface.Ofport != nil {
				continue
			}
			if strings.HasPrefix(iface.Name, "bad") {
				failed, msg := -1, "could not open network device "+iface.Name+" (No such device)"
				iface.Ofport, iface.Error = &failed, &msg
			} else {
				n := nextOFPort
				nextOFPort++
				iface.Ofport = &n
			}
			op, err := f.db.Where(&iface).Update(&iface, &iface.Ofport, &iface.Error)
			if err != nil {
				panic(err)
			}
			ops = append(ops, op...)
		}
		root.CurCfg = root.NextCfg
		op, err := f.db.Where(&root).Update(&root, &root.CurCfg)
		if err != nil {
			panic(err)
		}
		_, _ = f.db.Transact(ctx, append(ops, op...)...)
	}
}

func newTestClient(t *testing.T) (*Client, *fakeOVS) {
	t.Helper()
	f := startFakeOVS(t)
	c, err := New(context.Background(), f.endpoint, "br-test", "netdev")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c, f
}

func TestEnsureBridge(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	br, err := c.getBridge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if br.DatapathType != "netdev" || br.FailMode == nil || *br.FailMode != vswitchd.BridgeFailModeSecure ||
		!cmp.Equal(br.Protocols, []vswitchd.BridgeProtocols{"OpenFlow15"}) || br.ExternalIDs[OwnerKey] != OwnerValue {
		t.Fatalf("bridge = %+v", br)
	}
	ports, err := c.ListPorts(ctx, nil)
	if err != nil || len(ports) != 1 || ports[0].Name != "br-test" {
		t.Fatalf("ports of a new bridge = %+v, %v; want its internal port", ports, err)
	}

	root, _ := c.root(ctx)
	cfg := root.NextCfg
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatalf("second EnsureBridge: %v", err)
	}
	if root, _ := c.root(ctx); root.NextCfg != cfg {
		t.Fatalf("second EnsureBridge wrote to the database (next_cfg %d -> %d)", cfg, root.NextCfg)
	}
}

func TestEnsureBridgeFixesExistingBridge(t *testing.T) {
	ctx := context.Background()
	c, f := newTestClient(t)
	standalone := vswitchd.BridgeFailModeStandalone
	br := vswitchd.Bridge{UUID: "br", Name: "br-test", FailMode: &standalone,
		Protocols: []vswitchd.BridgeProtocols{"OpenFlow13"}, ExternalIDs: map[string]string{"other": "x"}}
	ops, err := f.db.Create(&br)
	if err != nil {
		t.Fatal(err)
	}
	var roots []vswitchd.OpenvSwitch
	if err := f.db.List(ctx, &roots); err != nil {
		t.Fatal(err)
	}
	link, err := f.db.Where(&roots[0]).Mutate(&roots[0], model.Mutation{Field: &roots[0].Bridges, Mutator: "insert", Value: []string{"br"}})
	if err != nil {
		t.Fatal(err)
	}
	f.transact(t, ctx, append(ops, link...))

	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	got, err := c.getBridge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if *got.FailMode != vswitchd.BridgeFailModeSecure || got.DatapathType != "netdev" ||
		!cmp.Equal(got.Protocols, []vswitchd.BridgeProtocols{"OpenFlow13", "OpenFlow15"}, sortProtocols) ||
		!cmp.Equal(got.ExternalIDs, map[string]string{"other": "x", OwnerKey: OwnerValue}) {
		t.Fatalf("bridge after EnsureBridge = %+v", got)
	}
}

var sortProtocols = cmp.Transformer("sort", func(in []vswitchd.BridgeProtocols) map[vswitchd.BridgeProtocols]bool {
	m := map[vswitchd.BridgeProtocols]bool{}
	for _, p := range in {
		m[p] = true
	}
	return m
})

func TestSetTableNames(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	names := func() map[uint8]string {
		t.Helper()
		br, err := c.getBridge(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint8]string{}
		for id, uuid := range br.FlowTables {
			ft := &vswitchd.FlowTable{UUID: uuid}
			if err := c.ovs.Get(ctx, ft); err != nil {
				t.Fatalf("Flow_Table %s: %v", uuid, err)
			}
			got[uint8(id)] = *ft.Name
		}
		return got
	}
	for _, want := range []map[uint8]string{
		{0: "Classifier", 1: "IngressRule"},
		{0: "Classifier", 1: "IngressRule"}, // unchanged
		{0: "Classifier", 2: "Output"},
		{},
	} {
		if err := c.SetTableNames(ctx, want); err != nil {
			t.Fatalf("SetTableNames(%v): %v", want, err)
		}
		if diff := cmp.Diff(want, names()); diff != "" {
			t.Fatalf("table names (-want +got):\n%s", diff)
		}
	}
}

func TestSetTableNamesRejectsBadNames(t *testing.T) {
	c, _ := newTestClient(t)
	for _, tc := range []struct {
		name  string
		names map[uint8]string
		want  string
	}{
		{"empty name", map[uint8]string{1: ""}, "invalid name"},
		{"number", map[uint8]string{1: "17"}, "invalid name"},
		{"comma", map[uint8]string{1: "a,b"}, "invalid name"},
		{"duplicate", map[uint8]string{1: "A", 2: "A"}, "both named"},
		{"table 255", map[uint8]string{255: "All"}, "not a flow table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.SetTableNames(context.Background(), tc.names)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPorts(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if _, err := c.CreatePort(ctx, "p1", "", nil); err == nil {
		t.Fatalf("CreatePort before EnsureBridge succeeded")
	}
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	p1, err := c.CreatePort(ctx, "p1", "", map[string]string{"pod": "a"})
	if err != nil {
		t.Fatalf("CreatePort p1: %v", err)
	}
	p2, err := c.CreatePort(ctx, "gw", "internal", map[string]string{"pod": "b", OwnerKey: "someone-else"})
	if err != nil {
		t.Fatalf("CreatePort gw: %v", err)
	}
	if p1.OFPort <= 0 || p2.OFPort <= 0 || p1.OFPort == p2.OFPort {
		t.Fatalf("ofports %d, %d", p1.OFPort, p2.OFPort)
	}
	wantP1 := Port{Name: "p1", OFPort: p1.OFPort, ExternalIDs: map[string]string{"pod": "a", OwnerKey: OwnerValue}}
	if diff := cmp.Diff(wantP1, p1); diff != "" {
		t.Fatalf("CreatePort p1 (-want +got):\n%s", diff)
	}
	if again, err := c.CreatePort(ctx, "p1", "", nil); err != nil || !cmp.Equal(again, p1) {
		t.Fatalf("CreatePort of an existing port = %+v, %v; want %+v", again, err, p1)
	}
	_, err = c.CreatePort(ctx, "bad0", "", nil)
	if err == nil || !strings.Contains(err.Error(), "could not open network device bad0") {
		t.Fatalf("CreatePort bad0: err = %v, want OVS's interface error", err)
	}

	for _, tc := range []struct {
		match map[string]string
		want  []string
	}{
		{nil, []string{"br-test", "gw", "p1"}},
		{map[string]string{OwnerKey: OwnerValue}, []string{"p1"}},
		{map[string]string{"pod": "b"}, []string{"gw"}},
		{map[string]string{"pod": "c"}, nil},
	} {
		ports, err := c.ListPorts(ctx, tc.match)
		if err != nil {
			t.Fatalf("ListPorts(%v): %v", tc.match, err)
		}
		var names []string
		for _, p := range ports {
			names = append(names, p.Name)
		}
		if !cmp.Equal(names, tc.want) {
			t.Errorf("ListPorts(%v) = %q, want %q", tc.match, names, tc.want)
		}
	}

	for i := range 2 {
		if err := c.DeletePort(ctx, "p1"); err != nil {
			t.Fatalf("DeletePort #%d: %v", i+1, err)
		}
	}
	ports, err := c.ListPorts(ctx, map[string]string{"pod": "a"})
	if err != nil || len(ports) != 0 {
		t.Fatalf("after DeletePort: %+v, %v", ports, err)
	}
	var ifaces []vswitchd.Interface
	if err := c.ovs.List(ctx, &ifaces); err != nil || len(ifaces) != 2 {
		t.Fatalf("%d interfaces left, %v; want 2 (br-test, gw)", len(ifaces), err)
	}
}

func TestEnsurePort(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	iface := func(name string) *vswitchd.Interface {
		t.Helper()
		i := &vswitchd.Interface{Name: name}
		if err := c.ovs.Get(ctx, i); err != nil {
			t.Fatalf("interface %s: %v", name, err)
		}
		return i
	}
	spec := PortSpec{Name: "tun0", Type: "geneve", Options: map[string]string{"remote_ip": "flow", "key": "flow"},
		ExternalIDs: map[string]string{"kind": "tunnel"}}
	p, err := c.EnsurePort(ctx, spec)
	if err != nil {
		t.Fatalf("EnsurePort: %v", err)
	}
	if got := iface("tun0"); got.Type != "geneve" || !cmp.Equal(got.Options, spec.Options) || got.MAC != nil {
		t.Fatalf("interface = %+v", got)
	}
	if p.OFPort <= 0 || !cmp.Equal(p.ExternalIDs, map[string]string{"kind": "tunnel", OwnerKey: OwnerValue}) {
		t.Fatalf("port = %+v", p)
	}

	root, _ := c.root(ctx)
	cfg := root.NextCfg
	if again, err := c.EnsurePort(ctx, spec); err != nil || !cmp.Equal(again, p) {
		t.Fatalf("EnsurePort of an unchanged port = %+v, %v; want %+v", again, err, p)
	}
	if root, _ := c.root(ctx); root.NextCfg != cfg {
		t.Fatalf("EnsurePort of an unchanged port wrote to the database")
	}

	spec.Type, spec.Options = "vxlan", map[string]string{"remote_ip": "flow"}
	spec.MAC = "0a:58:c6:13:01:01"
	changed, err := c.EnsurePort(ctx, spec)
	if err != nil {
		t.Fatalf("EnsurePort with new settings: %v", err)
	}
	if got := iface("tun0"); got.Type != "vxlan" || !cmp.Equal(got.Options, spec.Options) || got.MAC == nil || *got.MAC != spec.MAC {
		t.Fatalf("interface after update = %+v", got)
	}
	if changed.OFPort != p.OFPort {
		t.Fatalf("ofport changed from %d to %d on update", p.OFPort, changed.OFPort)
	}
	if _, err := c.EnsurePort(ctx, PortSpec{}); err == nil {
		t.Fatalf("EnsurePort without a name succeeded")
	}
}

func TestBridgeExternalIDs(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatalf("EnsureBridge: %v", err)
	}
	if v, err := c.BridgeExternalID(ctx, "palisade-round"); err != nil || v != "" {
		t.Fatalf("BridgeExternalID of an unset key = %q, %v; want \"\"", v, err)
	}
	for _, v := range []string{"1", "2"} {
		if err := c.SetBridgeExternalID(ctx, "palisade-round", v); err != nil {
			t.Fatalf("SetBridgeExternalID(%s): %v", v, err)
		}
		if got, err := c.BridgeExternalID(ctx, "palisade-round"); err != nil || got != v {
			t.Fatalf("BridgeExternalID = %q, %v; want %q", got, err, v)
		}
	}
	if v, _ := c.BridgeExternalID(ctx, OwnerKey); v != OwnerValue {
		t.Fatalf("setting another key lost the owner mark: %q", v)
	}
}

func TestClearFlowRestoreWait(t *testing.T) {
	ctx := context.Background()
	c, _ := newTestClient(t)
	if cleared, err := c.ClearFlowRestoreWait(ctx); err != nil || cleared {
		t.Fatalf("ClearFlowRestoreWait without the key = %v, %v; want false, nil", cleared, err)
	}
	root, err := c.root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	update := *root
	update.OtherConfig = map[string]string{flowRestoreWait: "true", "other": "kept"}
	ops, err := c.ovs.Where(&update).Update(&update, &update.OtherConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.transactAndWait(ctx, "set flow-restore-wait", ops); err != nil {
		t.Fatal(err)
	}
	if cleared, err := c.ClearFlowRestoreWait(ctx); err != nil || !cleared {
		t.Fatalf("ClearFlowRestoreWait = %v, %v; want true, nil", cleared, err)
	}
	root, err = c.root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(root.OtherConfig, map[string]string{"other": "kept"}) {
		t.Fatalf("other_config after clearing = %v", root.OtherConfig)
	}
}

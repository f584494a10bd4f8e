package cniserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/go-cmp/cmp"
	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/ipam"
	"palisade.dev/palisade/agent/podnet"
	"palisade.dev/palisade/cni/protocol"
	"palisade.dev/palisade/ovs/ovsconfig"
)

// fakeBridge is an in-memory ovsconfig.BridgeConfig.
type fakeBridge struct {
	ports      map[string]ovsconfig.Port
	nextOFPort int32
	failCreate error
	failDelete error
}

func newFakeBridge() *fakeBridge {
	return &fakeBridge{ports: map[string]ovsconfig.Port{}, nextOFPort: 1}
}

func (b *fakeBridge) EnsureBridge(context.Context) error                    { return nil }
func (b *fakeBridge) SetTableNames(context.Context, map[uint8]string) error { return nil }

func (b *fakeBridge) CreatePort(_ context.Context, name, _ string, ids map[string]string) (ovsconfig.Port, error) {
	if b.failCreate != nil {
		return ovsconfig.Port{}, b.failCreate
	}
	if p, ok := b.ports[name]; ok {
		return p, nil
	}
	p := ovsconfig.Port{Name: name, OFPort: b.nextOFPort, ExternalIDs: maps.Clone(ids)}
	b.nextOFPort++
	b.ports[name] = p
	return p, nil
}

func (b *fakeBridge) DeletePort(_ context.Context, name string) error {
	if b.failDelete != nil {
		return b.failDelete
	}
	delete(b.ports, name)
	return nil
}

func (b *fakeBridge) ListPorts(_ context.Context, match map[string]string) ([]ovsconfig.Port, error) {
	var out []ovsconfig.Port
	for _, p := range b.ports {
		ok := true
		for k, v := range match {
			ok = ok && p.ExternalIDs[k] == v
		}
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// fakeDatapath records the pods it was asked to add and delete.
type fakeDatapath struct {
	calls   []string
	failAdd error
	failDel error
}

func (d *fakeDatapath) AddPod(_ context.Context, p interfacestore.PodInterface) error {
	d.calls = append(d.calls, fmt.Sprintf("add %s %s ofport=%d", p.PodKey(), p.IP, p.OFPort))
	return d.failAdd
}

func (d *fakeDatapath) DeletePod(_ context.Context, p interfacestore.PodInterface) error {
	d.calls = append(d.calls, fmt.Sprintf("delete %s %s", p.PodKey(), p.IP))
	return d.failDel
}

// fakePodNetwork keeps veth pairs in a map by host interface name.
type fakePodNetwork struct {
	links     map[string]podnet.Config
	setups    int
	failSetup error
	failCheck error
}

func (n *fakePodNetwork) Setup(cfg podnet.Config) (podnet.Attachment, error) {
	n.setups++
	if n.failSetup != nil {
		return podnet.Attachment{}, n.failSetup
	}
	if _, ok := n.links[cfg.HostIfName]; ok {
		return podnet.Attachment{}, fmt.Errorf("%s already exists", cfg.HostIfName)
	}
	n.links[cfg.HostIfName] = cfg
	return fakeAttachment(cfg.IfName), nil
}

func (n *fakePodNetwork) Check(cfg podnet.Config) (podnet.Attachment, error) {
	if n.failCheck != nil {
		return podnet.Attachment{}, n.failCheck
	}
	got, ok := n.links[cfg.HostIfName]
	if !ok {
		return podnet.Attachment{}, fmt.Errorf("%s not found", cfg.HostIfName)
	}
	if got != cfg {
		return podnet.Attachment{}, fmt.Errorf("config %+v, want %+v", got, cfg)
	}
	return fakeAttachment(cfg.IfName), nil
}

func (n *fakePodNetwork) Teardown(name string) error { delete(n.links, name); return nil }

func (n *fakePodNetwork) HostLinkExists(name string) (bool, error) {
	_, ok := n.links[name]
	return ok, nil
}

func fakeAttachment(ifName string) podnet.Attachment {
	return podnet.Attachment{
		HostMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa},
		PodMAC:  net.HardwareAddr{0x02, 0, 0, 0, 0, byte(len(ifName))},
	}
}

type fixture struct {
	srv    *Server
	bridge *fakeBridge
	dp     *fakeDatapath
	net    *fakePodNetwork
	store  *interfacestore.Store
	ipam   *ipam.Allocator
}

func newFixture(t *testing.T, cidr string) *fixture {
	t.Helper()
	prefix := netip.MustParsePrefix(cidr)
	gw := prefix.Addr().Next()
	alloc, err := ipam.New(prefix, []netip.Addr{gw}, filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		bridge: newFakeBridge(),
		dp:     &fakeDatapath{},
		net:    &fakePodNetwork{links: map[string]podnet.Config{}},
		store:  interfacestore.NewStore(),
		ipam:   alloc,
	}
	srv, err := New(Config{
		SocketPath: filepath.Join(t.TempDir(), "cni.sock"), PodCIDR: prefix, GatewayIP: gw,
		Bridge: f.bridge, Datapath: f.dp, Store: f.store, IPAM: alloc,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.net = f.net
	f.srv = srv
	return f
}

// do sends one request through the HTTP handler.
func (f *fixture) do(t *testing.T, req protocol.Request) (protocol.Response, int) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return f.post(t, body)
}

func (f *fixture) post(t *testing.T, body []byte) (protocol.Response, int) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	httpReq := httptest.NewRequestWithContext(ctx, http.MethodPost, protocol.PathCNI, bytes.NewReader(body))
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, httpReq)
	var resp protocol.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, rec.Body.String())
	}
	return resp, rec.Code
}

func (f *fixture) reconcile(t *testing.T) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	if err := f.srv.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile() = %v", err)
	}
}

// assertNothingLeft fails if any port, veth, IP or store entry remains.
func (f *fixture) assertNothingLeft(t *testing.T) {
	t.Helper()
	if len(f.bridge.ports) != 0 {
		t.Errorf("OVS ports left: %v", slices.Collect(maps.Keys(f.bridge.ports)))
	}
	if len(f.net.links) != 0 {
		t.Errorf("veths left: %v", slices.Collect(maps.Keys(f.net.links)))
	}
	if owners := f.ipam.Owners(); len(owners) != 0 {
		t.Errorf("IPs left: %v", owners)
	}
	if f.store.Len() != 0 {
		t.Errorf("store entries left: %v", f.store.List())
	}
}

func addRequest(containerID, pod string) protocol.Request {
	return protocol.Request{
		Command: protocol.CommandAdd, ContainerID: containerID, Netns: "/run/netns/" + pod, IfName: "eth0",
		PodNamespace: "ns1", PodName: pod,
		NetConf: json.RawMessage(`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni"}`),
	}
}

func withCommand(r protocol.Request, c protocol.Command) protocol.Request {
	r.Command = c
	return r
}

func decodeResult(t *testing.T, resp protocol.Response) *types100.Result {
	t.Helper()
	if resp.Error != nil {
		t.Fatalf("unexpected error: %v", resp.Error)
	}
	r, err := types100.NewResult(resp.Result)
	if err != nil {
		t.Fatalf("decoding result: %v", err)
	}
	res, err := types100.GetResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAddDelCheck(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	f.reconcile(t)
	req := addRequest("c1", "a")

	resp, code := f.do(t, req)
	if code != http.StatusOK {
		t.Fatalf("ADD: HTTP %d, %v", code, resp.Error)
	}
	res := decodeResult(t, resp)
	hostIf := podnet.HostIfName("c1", "eth0")
	want := `{"cniVersion":"1.1.0","interfaces":[{"name":"` + hostIf + `","mac":"02:00:00:00:00:aa"},` +
		`{"name":"eth0","mac":"02:00:00:00:00:04","sandbox":"/run/netns/a"}],` +
		`"ips":[{"interface":1,"address":"198.18.4.2/24","gateway":"198.18.4.1"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"198.18.4.1"}]}`
	assertJSONEqual(t, "ADD result", want, res)
	wantIDs := map[string]string{
		interfacestore.ExternalIDOwner: "palisade", interfacestore.ExternalIDPodNamespace: "ns1",
		interfacestore.ExternalIDPodName: "a", interfacestore.ExternalIDContainerID: "c1",
		interfacestore.ExternalIDIfName: "eth0", interfacestore.ExternalIDIP: "198.18.4.2",
		interfacestore.ExternalIDMAC: "02:00:00:00:00:04",
	}
	if diff := cmp.Diff(wantIDs, f.bridge.ports[hostIf].ExternalIDs); diff != "" {
		t.Errorf("port external IDs (-want +got):\n%s", diff)
	}
	p, ok := f.store.GetByContainerID("c1")
	if !ok || p.HostIfName != hostIf || p.OFPort != 1 || p.IP != netip.MustParseAddr("198.18.4.2") {
		t.Errorf("store entry = %+v, %v", p, ok)
	}

	// ADD again: same result, nothing created twice.
	resp, _ = f.do(t, req)
	assertJSONEqual(t, "second ADD result", want, decodeResult(t, resp))
	if f.net.setups != 1 {
		t.Errorf("veth setups = %d, want 1", f.net.setups)
	}

	if resp, _ := f.do(t, withCommand(req, protocol.CommandCheck)); resp.Error != nil {
		t.Errorf("CHECK: %v", resp.Error)
	}

	for i := range 2 {
		if resp, code := f.do(t, withCommand(req, protocol.CommandDel)); resp.Error != nil || code != http.StatusOK {
			t.Fatalf("DEL #%d: HTTP %d, %v", i+1, code, resp.Error)
		}
	}
	f.assertNothingLeft(t)
	wantCalls := []string{"add ns1/a 198.18.4.2 ofport=1", "delete ns1/a 198.18.4.2"}
	if diff := cmp.Diff(wantCalls, f.dp.calls); diff != "" {
		t.Errorf("datapath calls (-want +got):\n%s", diff)
	}

	resp, _ = f.do(t, withCommand(req, protocol.CommandCheck))
	if resp.Error == nil || resp.Error.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK after DEL = %v, want unknown container", resp.Error)
	}
}

func TestAddRollsBack(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		setup     func(f *fixture)
		wantCode  uint
		wantMsg   string
		wantCalls []string
	}{
		{
			name: "netns missing",
			setup: func(f *fixture) {
				f.net.failSetup = &podnet.NetNSError{Path: "/run/netns/a", Err: errors.New("no such file")}
			},
			wantCode: types.ErrInvalidNetNS,
			wantMsg:  `palisade agent: cannot open network namespace "/run/netns/a": no such file`,
		},
		{
			name:     "OVS port fails",
			setup:    func(f *fixture) { f.bridge.failCreate = boom },
			wantCode: types.ErrInternal,
			wantMsg:  "palisade agent: adding pal",
		},
		{
			name:      "datapath fails",
			setup:     func(f *fixture) { f.dp.failAdd = boom },
			wantCode:  types.ErrInternal,
			wantMsg:   "palisade agent: installing the pod's flows: boom",
			wantCalls: []string{"add ns1/a 198.18.4.2 ofport=1", "delete ns1/a 198.18.4.2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "198.18.4.0/24")
			f.reconcile(t)
			tc.setup(f)
			resp, code := f.do(t, addRequest("c1", "a"))
			if code == http.StatusOK || resp.Error == nil || resp.Error.Code != tc.wantCode || !strings.Contains(resp.Error.Msg, tc.wantMsg) {
				t.Fatalf("ADD = HTTP %d, %#v; want code %d with %q", code, resp.Error, tc.wantCode, tc.wantMsg)
			}
			f.assertNothingLeft(t)
			if diff := cmp.Diff(tc.wantCalls, f.dp.calls); diff != "" {
				t.Errorf("datapath calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAddExhausted(t *testing.T) {
	f := newFixture(t, "198.18.4.0/30") // .2 is the only usable address
	f.reconcile(t)
	if resp, _ := f.do(t, addRequest("c1", "a")); resp.Error != nil {
		t.Fatal(resp.Error)
	}
	resp, _ := f.do(t, addRequest("c2", "b"))
	if resp.Error == nil || !strings.Contains(resp.Error.Msg, "allocating an IP: ipam: pod CIDR 198.18.4.0/30: no free address left") {
		t.Fatalf("ADD on a full CIDR = %v", resp.Error)
	}
	if len(f.net.links) != 1 || len(f.bridge.ports) != 1 {
		t.Errorf("failed ADD left something: links %d ports %d", len(f.net.links), len(f.bridge.ports))
	}
}

func TestAddRepairsBrokenAttachment(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	f.reconcile(t)
	req := addRequest("c1", "a")
	if resp, _ := f.do(t, req); resp.Error != nil {
		t.Fatal(resp.Error)
	}
	delete(f.bridge.ports, podnet.HostIfName("c1", "eth0")) // someone removed the port
	resp, _ := f.do(t, withCommand(req, protocol.CommandCheck))
	if resp.Error == nil || !strings.Contains(resp.Error.Msg, "OVS port") {
		t.Fatalf("CHECK of a pod without port = %v", resp.Error)
	}
	if resp, _ := f.do(t, req); resp.Error != nil {
		t.Fatalf("ADD of a broken attachment: %v", resp.Error)
	}
	if f.net.setups != 2 || len(f.bridge.ports) != 1 {
		t.Errorf("after repair: setups %d, ports %d; want 2, 1", f.net.setups, len(f.bridge.ports))
	}
	if resp, _ := f.do(t, withCommand(req, protocol.CommandCheck)); resp.Error != nil {
		t.Errorf("CHECK after repair: %v", resp.Error)
	}
}

func TestDel(t *testing.T) {
	t.Run("unknown container and other ifname succeed", func(t *testing.T) {
		f := newFixture(t, "198.18.4.0/24")
		f.reconcile(t)
		del := protocol.Request{Command: protocol.CommandDel, ContainerID: "never", IfName: "eth0"}
		if resp, _ := f.do(t, del); resp.Error != nil {
			t.Fatal(resp.Error)
		}
		if resp, _ := f.do(t, addRequest("c1", "a")); resp.Error != nil {
			t.Fatal(resp.Error)
		}
		other := protocol.Request{Command: protocol.CommandDel, ContainerID: "c1", IfName: "net1"}
		if resp, _ := f.do(t, other); resp.Error != nil {
			t.Fatal(resp.Error)
		}
		if f.store.Len() != 1 || len(f.ipam.Owners()) != 1 {
			t.Error("DEL of another interface name detached the pod")
		}
	})
	t.Run("failure keeps state for a retry", func(t *testing.T) {
		f := newFixture(t, "198.18.4.0/24")
		f.reconcile(t)
		req := addRequest("c1", "a")
		if resp, _ := f.do(t, req); resp.Error != nil {
			t.Fatal(resp.Error)
		}
		f.bridge.failDelete = errors.New("ovsdb down")
		resp, _ := f.do(t, withCommand(req, protocol.CommandDel))
		if resp.Error == nil || !strings.Contains(resp.Error.Msg, "ovsdb down") {
			t.Fatalf("DEL = %v, want the OVSDB error", resp.Error)
		}
		if f.store.Len() != 1 || len(f.ipam.Owners()) != 1 {
			t.Fatal("failed DEL forgot the pod")
		}
		f.bridge.failDelete = nil
		if resp, _ := f.do(t, withCommand(req, protocol.CommandDel)); resp.Error != nil {
			t.Fatal(resp.Error)
		}
		f.assertNothingLeft(t)
	})
}

func TestCheckPrevResult(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	f.reconcile(t)
	req := addRequest("c1", "a")
	resp, _ := f.do(t, req)
	if resp.Error != nil {
		t.Fatal(resp.Error)
	}
	check := withCommand(req, protocol.CommandCheck)
	check.NetConf = json.RawMessage(`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","prevResult":` + string(resp.Result) + `}`)
	if resp, _ := f.do(t, check); resp.Error != nil {
		t.Fatalf("CHECK with matching prevResult: %v", resp.Error)
	}
	wrong := strings.Replace(string(resp.Result), "198.18.4.2/24", "198.18.4.99/24", 1)
	check.NetConf = json.RawMessage(`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","prevResult":` + wrong + `}`)
	if resp, _ := f.do(t, check); resp.Error == nil || !strings.Contains(resp.Error.Msg, "does not list the pod's IP 198.18.4.2") {
		t.Fatalf("CHECK with wrong prevResult = %v", resp.Error)
	}
	f.net.failCheck = errors.New("eth0 is down")
	check.NetConf = req.NetConf
	if resp, _ := f.do(t, check); resp.Error == nil || !strings.Contains(resp.Error.Msg, "eth0 is down") {
		t.Fatalf("CHECK of a broken pod = %v", resp.Error)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	tests := []struct {
		name     string
		body     string
		ready    bool
		wantHTTP int
		wantCode uint
		wantMsg  string
	}{
		{name: "not JSON", body: `{"command":`, ready: true, wantHTTP: 400, wantCode: types.ErrDecodingFailure, wantMsg: "palisade agent: cannot decode the request"},
		{name: "invalid", body: `{"command":"ADD","containerID":"c1","ifName":"eth0","netns":"/x"}`, ready: true, wantHTTP: 400,
			wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: "palisade agent: CNI_ARGS must name the pod"},
		{name: "not ready", body: `{"command":"DEL","containerID":"c1","ifName":"eth0"}`, wantHTTP: 503,
			wantCode: types.ErrTryAgainLater, wantMsg: "palisade agent: not ready yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.srv.ready.Store(tc.ready)
			resp, code := f.post(t, []byte(tc.body))
			if code != tc.wantHTTP || resp.Error == nil || resp.Error.Code != tc.wantCode || !strings.Contains(resp.Error.Msg, tc.wantMsg) {
				t.Fatalf("got HTTP %d %#v; want HTTP %d, code %d, %q", code, resp.Error, tc.wantHTTP, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	status := func() (protocol.Response, int) {
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, protocol.PathStatus, nil))
		var resp protocol.Response
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		return resp, rec.Code
	}
	if resp, code := status(); code != http.StatusServiceUnavailable || resp.Error == nil || resp.Error.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS before Reconcile = HTTP %d %v", code, resp.Error)
	}
	f.reconcile(t)
	if resp, code := status(); code != http.StatusOK || resp.Error != nil {
		t.Fatalf("STATUS after Reconcile = HTTP %d %v", code, resp.Error)
	}
}

func TestReconcile(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	good := interfacestore.PodInterface{
		PodNamespace: "ns1", PodName: "a", ContainerID: "c1", IfName: "eth0",
		HostIfName: podnet.HostIfName("c1", "eth0"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 4}, IP: netip.MustParseAddr("198.18.4.7"),
	}
	vethGone := good
	vethGone.ContainerID, vethGone.PodName, vethGone.HostIfName, vethGone.IP = "c2", "b", podnet.HostIfName("c2", "eth0"), netip.MustParseAddr("198.18.4.8")
	outside := good
	outside.ContainerID, outside.PodName, outside.HostIfName, outside.IP = "c3", "c", podnet.HostIfName("c3", "eth0"), netip.MustParseAddr("198.18.9.9")
	ctx := context.Background()
	for _, p := range []interfacestore.PodInterface{good, vethGone, outside} {
		if _, err := f.bridge.CreatePort(ctx, p.HostIfName, "", externalIDs(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.bridge.CreatePort(ctx, "palbroken", "", map[string]string{interfacestore.ExternalIDOwner: "palisade"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.bridge.CreatePort(ctx, "uplink", "", nil); err != nil { // not ours
		t.Fatal(err)
	}
	gateway := map[string]string{interfacestore.ExternalIDOwner: "palisade", interfacestore.ExternalIDInterfaceType: interfacestore.InterfaceTypeGateway}
	if _, err := f.bridge.CreatePort(ctx, "palisade-gw0", "internal", gateway); err != nil { // the node's, not a pod's
		t.Fatal(err)
	}
	f.net.links[good.HostIfName] = podnet.Config{}
	f.net.links[outside.HostIfName] = podnet.Config{}
	f.net.links["palbroken"] = podnet.Config{}
	if err := f.ipam.MarkAllocated("c2", vethGone.IP); err != nil {
		t.Fatal(err)
	}
	if err := f.ipam.MarkAllocated("orphan", netip.MustParseAddr("198.18.4.20")); err != nil {
		t.Fatal(err)
	}
	f.store.Add(interfacestore.PodInterface{ContainerID: "stale", HostIfName: "palstale"})

	f.reconcile(t)

	good.OFPort = 1
	if diff := cmp.Diff([]interfacestore.PodInterface{good}, f.store.List(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("store (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"c1": "198.18.4.7"}, stringify(f.ipam.Owners())); diff != "" {
		t.Errorf("IPAM (-want +got):\n%s", diff)
	}
	wantPorts := []string{good.HostIfName, "palisade-gw0", "uplink"}
	slices.Sort(wantPorts)
	gotPorts := slices.Sorted(maps.Keys(f.bridge.ports))
	if diff := cmp.Diff(wantPorts, gotPorts); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{good.HostIfName}, slices.Sorted(maps.Keys(f.net.links))); diff != "" {
		t.Errorf("veths (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"add ns1/a 198.18.4.7 ofport=1"}, f.dp.calls); diff != "" {
		t.Errorf("datapath calls (-want +got):\n%s", diff)
	}
	if !f.srv.Ready() {
		t.Error("server not ready after Reconcile")
	}
}

func TestReconcileDatapathFailure(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	f.reconcile(t)
	if resp, _ := f.do(t, addRequest("c1", "a")); resp.Error != nil {
		t.Fatal(resp.Error)
	}
	f.srv.ready.Store(false)
	f.dp.failAdd = errors.New("switch disconnected")
	_, ctx := ktesting.NewTestContext(t)
	if err := f.srv.Reconcile(ctx); err == nil || !strings.Contains(err.Error(), "switch disconnected") {
		t.Fatalf("Reconcile() = %v, want the datapath error", err)
	}
	if f.srv.Ready() {
		t.Error("server ready after a failed Reconcile")
	}
	if f.store.Len() != 1 || len(f.ipam.Owners()) != 1 {
		t.Error("failed Reconcile dropped the pod")
	}
}

func TestNewValidation(t *testing.T) {
	prefix := netip.MustParsePrefix("198.18.4.0/24")
	gw := netip.MustParseAddr("198.18.4.1")
	alloc, err := ipam.New(prefix, []netip.Addr{gw}, filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	ok := Config{SocketPath: "/x.sock", PodCIDR: prefix, GatewayIP: gw, Bridge: newFakeBridge(), Datapath: &fakeDatapath{}, Store: interfacestore.NewStore(), IPAM: alloc}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{name: "ok", change: func(*Config) {}},
		{name: "no socket", change: func(c *Config) { c.SocketPath = "" }, wantErr: "socket path"},
		{name: "no datapath", change: func(c *Config) { c.Datapath = nil }, wantErr: "must all be set"},
		{name: "other CIDR", change: func(c *Config) { c.PodCIDR = netip.MustParsePrefix("198.18.5.0/24") }, wantErr: "not the IPAM's CIDR"},
		{name: "gateway not reserved", change: func(c *Config) { c.GatewayIP = netip.MustParseAddr("198.18.4.9") }, wantErr: "reserved in IPAM"},
		{name: "bad MTU", change: func(c *Config) { c.MTU = 10 }, wantErr: "MTU 10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.change(&cfg)
			s, err := New(cfg)
			if tc.wantErr == "" {
				if err != nil || s.cfg.MTU != DefaultMTU {
					t.Fatalf("New() = %v (MTU %d)", err, s.cfg.MTU)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New() error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestKeyedMutex(t *testing.T) {
	var k keyedMutex
	unlockA := k.lock("a")
	unlockB := k.lock("b") // another key does not block
	done := make(chan struct{})
	go func() {
		unlock := k.lock("a")
		unlock()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("second lock of the same key did not wait")
	default:
	}
	unlockA()
	<-done
	unlockB()
	if len(k.locks) != 0 {
		t.Errorf("locks left: %d", len(k.locks))
	}
}

// assertJSONEqual compares got, encoded, with the JSON text want.
func assertJSONEqual(t *testing.T, what, want string, got any) {
	t.Helper()
	data, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

func stringify(m map[string]netip.Addr) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v.String()
	}
	return out
}

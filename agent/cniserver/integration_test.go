//go:build integration

package cniserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/agent/cniserver"
	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/ipam"
	"palisade.dev/palisade/agent/podnet"
	"palisade.dev/palisade/ovs/ovsconfig"
	"palisade.dev/palisade/test/ovsinstance"
)

var (
	podCIDR = netip.MustParsePrefix("198.18.100.0/24")
	gateway = netip.MustParseAddr("198.18.100.1")
)

// recordingDatapath stands in for the OpenFlow pipeline: it records calls.
type recordingDatapath struct {
	mu    sync.Mutex
	calls []string
}

func (d *recordingDatapath) AddPod(_ context.Context, p interfacestore.PodInterface) error {
	d.record("add %s %s", p.PodKey(), p.IP)
	return nil
}

func (d *recordingDatapath) DeletePod(_ context.Context, p interfacestore.PodInterface) error {
	d.record("delete %s %s", p.PodKey(), p.IP)
	return nil
}

func (d *recordingDatapath) record(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, fmt.Sprintf(format, args...))
}

func (d *recordingDatapath) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.calls
	d.calls = nil
	slices.Sort(out)
	return out
}

// agent is a cniserver.Server running in the test process.
type agent struct {
	socket string
	store  *interfacestore.Store
	ipam   *ipam.Allocator
	dp     *recordingDatapath
	stop   func()
}

func startAgent(t *testing.T, bridge ovsconfig.BridgeConfig, socket, ipamFile string) *agent {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	alloc, err := ipam.New(podCIDR, []netip.Addr{gateway}, ipamFile)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{socket: socket, store: interfacestore.NewStore(), ipam: alloc, dp: &recordingDatapath{}}
	srv, err := cniserver.New(cniserver.Config{
		SocketPath: socket, PodCIDR: podCIDR, GatewayIP: gateway,
		Bridge: bridge, Datapath: a.dp, Store: a.store, IPAM: alloc,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	a.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(a.stop)
	waitFor(t, "the agent socket", func() bool { _, err := os.Stat(socket); return err == nil })
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %o, want 600", perm)
	}
	return a
}

// plugin runs the palisade-cni binary the way a container runtime does.
type plugin struct {
	bin, dir string
}

type pod struct {
	name, netns, containerID string
}

// invoke runs one CNI command; it returns stdout and the CNI error if the
// plugin failed.
func (p plugin) invoke(t *testing.T, command string, pd pod, stdin string) ([]byte, *types.Error) {
	t.Helper()
	cmd := exec.Command(p.bin)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"CNI_COMMAND=" + command,
		"CNI_CONTAINERID=" + pd.containerID,
		"CNI_NETNS=" + pd.netns,
		"CNI_IFNAME=eth0",
		"CNI_ARGS=K8S_POD_NAMESPACE=paltest;K8S_POD_NAME=" + pd.name + ";K8S_POD_INFRA_CONTAINER_ID=" + pd.containerID + ";K8S_POD_UID=1234",
		"CNI_PATH=" + p.dir,
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("running %s: %v", p.bin, err)
	}
	cniErr := &types.Error{}
	if jerr := json.Unmarshal(stdout.Bytes(), cniErr); jerr != nil {
		t.Fatalf("%s %s failed (%v) without a CNI error on stdout: %q, stderr %q", command, pd.name, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), cniErr
}

func netConf(socket string) string {
	return `{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","agentSocket":"` + socket + `"}`
}

func checkConf(socket string, prevResult []byte) string {
	return `{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","agentSocket":"` + socket + `","prevResult":` + string(prevResult) + `}`
}

func TestPluginAgainstRealOVS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces, veths, OVS)")
	}
	for _, tool := range []string{"ip", "ping", "ethtool", "ovs-vsctl", "ovs-ofctl", "ovsdb-server", "ovs-vswitchd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test needs %s: %v", tool, err)
		}
	}
	_, ctx := ktesting.NewTestContext(t)
	suffix := randomHex(t, 3)

	// OVS, in a short directory (unix socket paths are limited).
	ovsDir, err := os.MkdirTemp("", "ovs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ovsDir) })
	// A bridge name of its own: the bridge's internal port is a device in
	// this network namespace, where other tests' OVS may run at once.
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: ovsDir, Bridge: "brcni" + suffix})
	if err != nil {
		t.Fatalf("starting OVS: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("stopping OVS: %v", err)
		}
	})
	bridge, err := ovsconfig.New(ctx, inst.DBEndpoint, inst.Bridge, "netdev")
	if err != nil {
		t.Fatalf("connecting to OVSDB: %v", err)
	}
	t.Cleanup(bridge.Close)
	if err := bridge.EnsureBridge(ctx); err != nil {
		t.Fatalf("creating the bridge: %v", err)
	}
	if _, err := inst.Ofctl("add-flow", "priority=0,actions=NORMAL"); err != nil {
		t.Fatalf("adding the NORMAL flow: %v", err)
	}

	// The plugin binary, built as a runtime would find it in CNI_PATH.
	binDir := t.TempDir()
	pl := plugin{bin: filepath.Join(binDir, "palisade-cni"), dir: binDir}
	build := exec.Command("go", "build", "-o", pl.bin, "palisade.dev/palisade/cmd/palisade-cni")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building palisade-cni: %v\n%s", err, out)
	}

	sockDir, err := os.MkdirTemp("", "palcni")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	socket := filepath.Join(sockDir, "cni.sock")
	ipamFile := filepath.Join(t.TempDir(), "ipam.json")
	ag := startAgent(t, bridge, socket, ipamFile)

	pods := []pod{newPod(t, "a", suffix), newPod(t, "b", suffix)}
	results := map[string][]byte{}
	ips := map[string]string{}
	for _, pd := range pods {
		out, cniErr := pl.invoke(t, "ADD", pd, netConf(socket))
		if cniErr != nil {
			t.Fatalf("ADD %s: %v", pd.name, cniErr)
		}
		results[pd.name] = out
		res := parseResult(t, out)
		if len(res.IPs) != 1 || len(res.Interfaces) != 2 || res.Interfaces[1].Sandbox != pd.netns || res.Interfaces[1].Name != "eth0" {
			t.Fatalf("ADD %s: unexpected result %s", pd.name, out)
		}
		ip := res.IPs[0].Address
		if ones, _ := ip.Mask.Size(); ones != 24 || !podCIDR.Contains(netip.MustParseAddr(ip.IP.String())) || res.IPs[0].Gateway.String() != gateway.String() {
			t.Fatalf("ADD %s: address %s gateway %s, want in %s via %s", pd.name, ip.String(), res.IPs[0].Gateway, podCIDR, gateway)
		}
		ips[pd.name] = ip.IP.String()
		hostIf := podnet.HostIfName(pd.containerID, "eth0")
		if res.Interfaces[0].Name != hostIf {
			t.Errorf("host interface = %s, want %s", res.Interfaces[0].Name, hostIf)
		}
		assertTxOff(t, "", hostIf)
		assertTxOff(t, pd.netns, "eth0")
		if out, err := exec.Command("ip", "-n", filepath.Base(pd.netns), "route", "show", "default").CombinedOutput(); err != nil ||
			!strings.Contains(string(out), "default via "+gateway.String()+" dev eth0") || !strings.Contains(string(out), "onlink") {
			t.Errorf("pod %s default route: %q (%v)", pd.name, out, err)
		}
	}
	if ips["a"] == ips["b"] {
		t.Fatalf("both pods got %s", ips["a"])
	}
	// ADD again is idempotent: same result.
	if out, cniErr := pl.invoke(t, "ADD", pods[0], netConf(socket)); cniErr != nil || !sameJSON(t, out, results["a"]) {
		t.Errorf("second ADD of a: %v\n got %s\nwant %s", cniErr, out, results["a"])
	}
	if got, want := ag.dp.take(), []string{"add paltest/a " + ips["a"], "add paltest/b " + ips["b"]}; !slices.Equal(got, want) {
		t.Errorf("datapath calls = %q, want %q", got, want)
	}

	ping(t, pods[0], ips["b"])
	ping(t, pods[1], ips["a"])

	for _, pd := range pods {
		if _, cniErr := pl.invoke(t, "CHECK", pd, checkConf(socket, results[pd.name])); cniErr != nil {
			t.Errorf("CHECK %s: %v", pd.name, cniErr)
		}
	}
	if _, cniErr := pl.invoke(t, "STATUS", pod{}, netConf(socket)); cniErr != nil {
		t.Errorf("STATUS: %v", cniErr)
	}

	// Agent restart: a new server rebuilds its state from OVSDB and the IPAM file.
	ag.stop()
	ag = startAgent(t, bridge, socket, ipamFile)
	if got, want := ag.dp.take(), []string{"add paltest/a " + ips["a"], "add paltest/b " + ips["b"]}; !slices.Equal(got, want) {
		t.Errorf("datapath calls after restart = %q, want %q", got, want)
	}
	if n := ag.store.Len(); n != 2 {
		t.Errorf("store after restart has %d pods, want 2", n)
	}
	for _, pd := range pods {
		if _, cniErr := pl.invoke(t, "CHECK", pd, checkConf(socket, results[pd.name])); cniErr != nil {
			t.Errorf("CHECK %s after restart: %v", pd.name, cniErr)
		}
	}
	ping(t, pods[0], ips["b"])

	// DEL twice each; b's netns is gone before its DEL, as after a node-side cleanup.
	deleteNetns(t, pods[1])
	for _, pd := range pods {
		for i := range 2 {
			if _, cniErr := pl.invoke(t, "DEL", pd, netConf(socket)); cniErr != nil {
				t.Errorf("DEL #%d of %s: %v", i+1, pd.name, cniErr)
			}
		}
	}
	if got, want := ag.dp.take(), []string{"delete paltest/a " + ips["a"], "delete paltest/b " + ips["b"]}; !slices.Equal(got, want) {
		t.Errorf("datapath calls = %q, want %q", got, want)
	}
	assertNothingLeft(t, ctx, bridge, ag, pods...)

	t.Run("missing netns", func(t *testing.T) {
		pd := pod{name: "ghost", netns: "/run/netns/paltest-missing-" + suffix, containerID: "paltest-ghost-" + suffix}
		_, cniErr := pl.invoke(t, "ADD", pd, netConf(socket))
		if cniErr == nil || cniErr.Code != types.ErrInvalidNetNS || !strings.Contains(cniErr.Msg, `cannot open network namespace "`+pd.netns+`"`) {
			t.Fatalf("ADD with a missing netns = %#v, want code %d naming the path", cniErr, types.ErrInvalidNetNS)
		}
		t.Logf("error as the runtime sees it: %s", cniErr.Msg)
		assertNothingLeft(t, ctx, bridge, ag, pd)
	})
	t.Run("bad stdin", func(t *testing.T) {
		pd := newPod(t, "c", suffix)
		_, cniErr := pl.invoke(t, "ADD", pd, `{"cniVersion":"1.1.0","name":`)
		if cniErr == nil || cniErr.Code != types.ErrDecodingFailure || !strings.Contains(cniErr.Msg, "network config") {
			t.Fatalf("ADD with bad JSON = %#v, want a decoding error about the network config", cniErr)
		}
		t.Logf("error as the runtime sees it: %s", cniErr.Msg)
		assertNothingLeft(t, ctx, bridge, ag, pd)
	})
	t.Run("agent socket absent", func(t *testing.T) {
		pd := newPod(t, "d", suffix)
		absent := filepath.Join(sockDir, "absent.sock")
		_, cniErr := pl.invoke(t, "ADD", pd, netConf(absent))
		if cniErr == nil || cniErr.Code != types.ErrTryAgainLater ||
			!strings.HasPrefix(cniErr.Msg, "palisade-cni: cannot reach the Palisade agent at "+absent+": ") {
			t.Fatalf("ADD without agent = %#v", cniErr)
		}
		t.Logf("error as the runtime sees it: %s", cniErr.Msg)
		_, cniErr = pl.invoke(t, "STATUS", pod{}, netConf(absent))
		if cniErr == nil || cniErr.Code != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS without agent = %#v, want code %d", cniErr, types.ErrPluginNotAvailable)
		}
		assertNothingLeft(t, ctx, bridge, ag, pd)
	})
}

func newPod(t *testing.T, name, suffix string) pod {
	t.Helper()
	ns := "paltest-" + name + "-" + suffix
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	pd := pod{name: name, netns: "/run/netns/" + ns, containerID: "paltest-" + name + "-" + suffix}
	t.Cleanup(func() { deleteNetns(t, pd) })
	return pd
}

func deleteNetns(t *testing.T, pd pod) {
	t.Helper()
	if _, err := os.Stat(pd.netns); errors.Is(err, os.ErrNotExist) {
		return
	}
	if out, err := exec.Command("ip", "netns", "del", filepath.Base(pd.netns)).CombinedOutput(); err != nil {
		t.Errorf("ip netns del: %v: %s", err, out)
	}
}

func ping(t *testing.T, from pod, ip string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(from.netns), "ping", "-c1", "-W2", ip).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", ip, from.name, err, out)
	}
}

func assertTxOff(t *testing.T, netns, ifName string) {
	t.Helper()
	args := []string{"-k", ifName}
	cmd := exec.Command("ethtool", args...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", filepath.Base(netns), "ethtool"}, args...)...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s: %v: %s", ifName, err, out)
	}
	if !strings.Contains(string(out), "tx-checksumming: off") {
		t.Errorf("%s (netns %q): transmit checksum offload is not off:\n%s", ifName, netns, out)
	}
}

// assertNothingLeft fails if a pod left a veth, an OVS port or an IP.
func assertNothingLeft(t *testing.T, ctx context.Context, bridge ovsconfig.BridgeConfig, ag *agent, pods ...pod) {
	t.Helper()
	for _, pd := range pods {
		hostIf := podnet.HostIfName(pd.containerID, "eth0")
		if _, err := netlink.LinkByName(hostIf); err == nil {
			t.Errorf("veth %s of %s is left", hostIf, pd.name)
		}
		if _, ok := ag.store.GetByContainerID(pd.containerID); ok {
			t.Errorf("store still has %s", pd.name)
		}
	}
	ports, err := bridge.ListPorts(ctx, map[string]string{interfacestore.ExternalIDOwner: interfacestore.OwnerPalisade})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 0 {
		t.Errorf("OVS pod ports left: %+v", ports)
	}
	if owners := ag.ipam.Owners(); len(owners) != 0 {
		t.Errorf("IPs left: %v", owners)
	}
}

func parseResult(t *testing.T, out []byte) *types100.Result {
	t.Helper()
	r, err := types100.NewResult(out)
	if err != nil {
		t.Fatalf("parsing result %s: %v", out, err)
	}
	res, err := types100.GetResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return bytes.Equal(ax, by)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/nsexec"
	"palisade.dev/palisade/test/lab/probe"
	"palisade.dev/palisade/test/lab/underlay"
)

const (
	netNodes = 3
	netNS    = "net"
	tcpPort  = 80
	udpPort  = 53
)

// TestNetwork checks pod networking across a 3-node lab: every pod reaches
// every other over TCP and UDP through the tunnel, spoofed sources are
// dropped, nodes reach their own pods under deny-all, an agent restart
// loses nothing, and pod churn leaks nothing. The subtests share one lab
// and run in order.
func TestNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	l := startLab(t, ctx, netNodes)
	kube := l.Client()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: netNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two pods per node.
	var names []string
	for i := range 2 * netNodes {
		names = append(names, fmt.Sprintf("p%d", i))
	}
	createPinnedPods(t, ctx, kube, netNS, names)
	pods := labPods(t, l, netNS)
	for _, p := range pods {
		t.Logf("pod %s on %s: %s", p.Key(), p.Node, p.IP)
	}

	t.Run("AllPairsTCPAndUDP", func(t *testing.T) {
		for _, proto := range []string{probe.TCP, probe.UDP} {
			port := tcpPort
			if proto == probe.UDP {
				port = udpPort
			}
			took := allPairs(t, ctx, pods, proto, port, func(_, _ probe.Pod) bool { return true }, 30*time.Second)
			t.Logf("%s: all %d pairs across %d nodes reachable (observed within %s)", proto, len(pods)*len(pods), netNodes, took)
		}
	})

	t.Run("SpoofedSourceIsDropped", func(t *testing.T) { testSpoofing(t, ctx, l, pods) })

	t.Run("NodeReachesItsPodsUnderDenyAll", func(t *testing.T) { testNodeTraffic(t, ctx, l, kube, pods) })

	t.Run("AgentRestartKeepsEverything", func(t *testing.T) {
		before := snapshot(t, l)
		for i := 1; i <= netNodes; i++ {
			start := time.Now()
			if err := l.RestartAgent(ctx, i); err != nil {
				t.Fatalf("restart the agent of node%d: %v", i, err)
			}
			t.Logf("node%d's agent restarted and serving in %s", i, time.Since(start).Round(time.Millisecond))
		}
		for _, proto := range []string{probe.TCP, probe.UDP} {
			port := map[string]int{probe.TCP: tcpPort, probe.UDP: udpPort}[proto]
			took := allPairs(t, ctx, pods, proto, port, func(_, _ probe.Pod) bool { return true }, 30*time.Second)
			t.Logf("%s: all pairs reachable after the restarts (observed within %s)", proto, took)
		}
		after := snapshot(t, l)
		if diff := cmp.Diff(before, after); diff != "" {
			t.Fatalf("node state changed across agent restarts (-before +after):\n%s", diff)
		}
		t.Logf("no OVS port, IP, veth or namespace leaked or lost:\n%s", before)
	})

	t.Run("PodChurnLeavesNothing", func(t *testing.T) { testChurn(t, ctx, l, kube) })
}

// createPinnedPods creates pods spread over the nodes round-robin (by
// spec.nodeName) with a TCP and a UDP test server, and waits until all are
// Running with an IP.
func createPinnedPods(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns string, names []string) {
	t.Helper()
	for i, n := range names {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n, Labels: map[string]string{"pod": n}},
			Spec: corev1.PodSpec{
				NodeName: layout.NodeName(i%netNodes + 1),
				Containers: []corev1.Container{{
					Name: "server", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
					Ports: []corev1.ContainerPort{
						{Name: "tcp", ContainerPort: tcpPort, Protocol: corev1.ProtocolTCP},
						{Name: "udp", ContainerPort: udpPort, Protocol: corev1.ProtocolUDP},
					},
				}},
			},
		}
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPods(t, ctx, kube, ns, len(names), 120*time.Second)
}

// waitPods waits until ns has exactly n pods, all Running with an IP.
func waitPods(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
			}
		}
		if running == n && len(list.Items) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods in %s, %d Running, after %s; want %d Running", len(list.Items), ns, running, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func labPods(t *testing.T, l *lab.Lab, ns string) []probe.Pod {
	t.Helper()
	all, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	var pods []probe.Pod
	for _, p := range all {
		if p.Namespace == ns {
			pods = append(pods, p)
		}
	}
	return pods
}

// allPairs probes every ordered pair of pods until each cell matches want,
// and returns how long that took; it fails after timeout with the wrong
// cells.
func allPairs(t *testing.T, ctx context.Context, pods []probe.Pod, proto string, port int, want func(from, to probe.Pod) bool, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		round := time.Since(start)
		res, err := probe.Matrix(ctx, pods, port, proto, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var wrong []string
		for _, from := range pods {
			for _, to := range pods {
				got, _ := res.Allowed(from.Key(), to.Key())
				if got != want(from, to) {
					wrong = append(wrong, fmt.Sprintf("%s (%s) -> %s (%s): allowed=%v", from.Key(), from.Node, to.Key(), to.Node, got))
				}
			}
		}
		if len(wrong) == 0 {
			return round.Round(time.Millisecond)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s/%d reachability wrong after %s:\n%s\n%s", proto, port, timeout, strings.Join(wrong, "\n"), res.Table())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dialFrom connects from inside a network namespace, optionally from a
// given local address, and returns the peer's reply line (or datagram).
func dialFrom(ctx context.Context, netnsPath string, local netip.Addr, proto string, to netip.Addr, port int, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	network := strings.ToLower(proto)
	var conn net.Conn
	if err := nsexec.Do(netnsPath, func() error {
		d := net.Dialer{}
		if local.IsValid() {
			if network == "udp" {
				d.LocalAddr = &net.UDPAddr{IP: local.AsSlice()}
			} else {
				d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
			}
		}
		var err error
		conn, err = d.DialContext(ctx, network, net.JoinHostPort(to.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if network == "udp" {
		if _, err := conn.Write([]byte("probe")); err != nil {
			return "", err
		}
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

var defaultDrop = regexp.MustCompile(`n_packets=(\d+),.* priority=0 actions=drop`)

// spoofGuardDrops is the packet count of node i's SpoofGuard default drop.
func spoofGuardDrops(t *testing.T, l *lab.Lab, i int) int {
	t.Helper()
	out, err := l.NodeOVS(i).Ofctl("--names", "dump-flows", "table=SpoofGuard")
	if err != nil {
		t.Fatal(err)
	}
	m := defaultDrop.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no SpoofGuard default flow on node%d:\n%s", i, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func podOn(t *testing.T, pods []probe.Pod, node string, skip ...string) probe.Pod {
	t.Helper()
	for _, p := range pods {
		if p.Node == node && !slices.Contains(skip, p.Key()) {
			return p
		}
	}
	t.Fatalf("no pod on %s", node)
	return probe.Pod{}
}

// testSpoofing gives a pod a second address that is not its own and
// connects from it, to a pod on its node and to one on another node: both
// fail, and the node's SpoofGuard drop counts the packets; from its own
// address the same connections work.
func testSpoofing(t *testing.T, ctx context.Context, l *lab.Lab, pods []probe.Pod) {
	a := podOn(t, pods, "node1")
	local := podOn(t, pods, "node1", a.Key())
	remote := podOn(t, pods, "node2")
	own := netip.MustParseAddr(a.IP)
	// An unused address of node1's own pod CIDR: without the spoof guard
	// the replies would come back to node1.
	foreign := netip.AddrFrom4([4]byte{own.As4()[0], own.As4()[1], own.As4()[2], 250})
	nsName := filepath.Base(a.Netns)
	if err := underlayRun(ctx, "ip", "-n", nsName, "addr", "add", foreign.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = underlayRun(context.Background(), "ip", "-n", nsName, "addr", "del", foreign.String()+"/32", "dev", "eth0")
	})

	for _, to := range []probe.Pod{local, remote} {
		dst := netip.MustParseAddr(to.IP)
		for _, proto := range []string{probe.TCP, probe.UDP} {
			port := map[string]int{probe.TCP: tcpPort, probe.UDP: udpPort}[proto]
			reply, err := dialFrom(ctx, a.Netns, own, proto, dst, port, 2*time.Second)
			if err != nil || reply != to.Key() {
				t.Fatalf("%s from %s's own address %s to %s (%s): reply %q, %v", proto, a.Key(), own, to.Key(), to.Node, reply, err)
			}
			before := spoofGuardDrops(t, l, 1)
			reply, err = dialFrom(ctx, a.Netns, foreign, proto, dst, port, 2*time.Second)
			if err == nil {
				t.Fatalf("%s from the spoofed address %s to %s (%s) got through: reply %q", proto, foreign, to.Key(), to.Node, reply)
			}
			dropped := spoofGuardDrops(t, l, 1) - before
			if dropped < 1 {
				t.Fatalf("%s from %s to %s failed (%v) but node1's SpoofGuard dropped nothing", proto, foreign, to.Key(), err)
			}
			t.Logf("%s %s -> %s (%s) from spoofed %s: %v; SpoofGuard dropped %d packet(s)", proto, a.Key(), to.Key(), to.Node, foreign, err, dropped)
		}
	}
}

func underlayRun(ctx context.Context, name string, args ...string) error {
	out, err := execCommand(ctx, name, args...)
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// testNodeTraffic isolates every pod for ingress and checks that each node
// still reaches its own pods (TCP and UDP), but not the other nodes' pods,
// and pods do not reach each other.
func testNodeTraffic(t *testing.T, ctx context.Context, l *lab.Lab, kube kubernetes.Interface, pods []probe.Pod) {
	denyAll := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: netNS, Name: "deny-all-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	if _, err := kube.NetworkingV1().NetworkPolicies(netNS).Create(ctx, denyAll, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.NetworkingV1().NetworkPolicies(netNS).Delete(context.Background(), denyAll.Name, metav1.DeleteOptions{})
	})
	took := allPairs(t, ctx, pods, probe.TCP, tcpPort, func(from, to probe.Pod) bool { return from.Key() == to.Key() }, 30*time.Second)
	t.Logf("deny-all ingress realized on all nodes within %s: pods reach no other pod", took)

	var wg sync.WaitGroup
	for i := 1; i <= netNodes; i++ {
		node := layout.NodeName(i)
		nodeNetns := layout.NetnsPath(layout.NodeNetns(i))
		for _, p := range pods {
			dst := netip.MustParseAddr(p.IP)
			for _, proto := range []string{probe.TCP, probe.UDP} {
				port := map[string]int{probe.TCP: tcpPort, probe.UDP: udpPort}[proto]
				wg.Go(func() {
					reply, err := dialFrom(ctx, nodeNetns, netip.Addr{}, proto, dst, port, 2*time.Second)
					ok := err == nil && reply == p.Key()
					switch {
					case p.Node == node && !ok:
						t.Errorf("%s cannot reach its own pod %s over %s under deny-all: reply %q, %v", node, p.Key(), proto, reply, err)
					case p.Node != node && ok:
						t.Errorf("%s reached %s on %s over %s under deny-all: only a pod's own node is exempt", node, p.Key(), p.Node, proto)
					}
				})
			}
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("every node reaches its own pods (TCP and UDP) and no other node's under deny-all")
	if err := kube.NetworkingV1().NetworkPolicies(netNS).Delete(ctx, denyAll.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	allPairs(t, ctx, pods, probe.TCP, tcpPort, func(_, _ probe.Pod) bool { return true }, 30*time.Second)

	t.Log("without the policy, nodes reach the other nodes' pods too (routes through the gateway and the tunnel)")
	for i := 1; i <= netNodes; i++ {
		for _, p := range pods {
			reply, err := dialFrom(ctx, layout.NetnsPath(layout.NodeNetns(i)), netip.Addr{}, probe.TCP, netip.MustParseAddr(p.IP), tcpPort, 2*time.Second)
			if err != nil || reply != p.Key() {
				t.Errorf("node%d -> %s (%s): reply %q, %v", i, p.Key(), p.Node, reply, err)
			}
		}
	}
}

// nodeState is what must not change across agent restarts nor leak from
// pod churn, per node.
type nodeState struct {
	Ports  []string          // OVS ports of br-int
	IPs    map[string]string // IPAM: container ID -> IP
	Veths  []string          // pod veth host ends in the node's namespace
	Netnss int               // pod network namespaces of the whole lab
}

type labState map[string]nodeState

func (s labState) String() string {
	var b strings.Builder
	for i := 1; i <= len(s); i++ {
		n := s[layout.NodeName(i)]
		fmt.Fprintf(&b, "node%d: %d OVS ports, %d IPs, %d veths\n", i, len(n.Ports), len(n.IPs), len(n.Veths))
	}
	return b.String()
}

func snapshot(t *testing.T, l *lab.Lab) labState {
	t.Helper()
	names, err := underlay.ListNetns()
	if err != nil {
		t.Fatal(err)
	}
	podNetns := 0
	for _, n := range names {
		if strings.HasPrefix(n, layout.NetnsPrefix+"p") {
			podNetns++
		}
	}
	st := labState{}
	for i := 1; i <= l.Nodes(); i++ {
		node := layout.NodeName(i)
		out, err := l.NodeOVS(i).Vsctl("list-ports", "br-int")
		if err != nil {
			t.Fatal(err)
		}
		ns := nodeState{Ports: strings.Fields(out), IPs: map[string]string{}, Netnss: podNetns}
		data, err := os.ReadFile(filepath.Join(l.Dir(), "nodes", node, "agent", "ipam.json"))
		if err != nil {
			t.Fatal(err)
		}
		var ipam struct {
			Allocations map[string]string `json:"allocations"`
		}
		if err := json.Unmarshal(data, &ipam); err != nil {
			t.Fatal(err)
		}
		ns.IPs = ipam.Allocations
		links, err := execCommand(context.Background(), "ip", "-n", layout.NodeNetns(i), "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(links, "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "pal") && !strings.HasPrefix(f[1], "palisade-") {
				ns.Veths = append(ns.Veths, strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0])
			}
		}
		slices.Sort(ns.Veths)
		st[node] = ns
	}
	return st
}

// testChurn creates and deletes 200 pods in batches across the nodes and
// checks that nothing of them is left.
func testChurn(t *testing.T, ctx context.Context, l *lab.Lab, kube kubernetes.Interface) {
	const total, batch = 200, 25
	before := snapshot(t, l)
	ns := "churn"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for round := 0; round < total/batch; round++ {
		var names []string
		for i := range batch {
			names = append(names, fmt.Sprintf("c%d-%d", round, i))
		}
		createPinnedPods(t, ctx, kube, ns, names)
		for _, n := range names {
			if err := kube.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitPods(t, ctx, kube, ns, 0, 60*time.Second)
	}
	t.Logf("%d pods created and deleted in batches of %d in %s", total, batch, time.Since(start).Round(time.Millisecond))
	var after labState
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = snapshot(t, l)
		if cmp.Equal(before, after) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod churn left state behind (-before +after):\n%s", cmp.Diff(before, after))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("nothing left: %s", after)
}

func execCommand(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

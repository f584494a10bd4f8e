//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/probe"
)

const ovsrNS = "ovsr"

// TestOVSRestart restarts node1's ovs-vswitchd (lab.RestartOVS: with
// flow-restore-wait, as the deployment's start script does) while allowed
// TCP connections to b (on node1) stream in both directions, from a1 on
// node1 and from a2 on node2. The userspace datapath loses its conntrack
// table with ovs-vswitchd, so their packets after the restart are new to
// node1's conntrack: the policy must allow them again, and each connection
// must deliver every byte, in order, without a reset. The agent must
// install the same flows again. Only clients -> b is allowed: b is
// isolated for egress and the clients for ingress, so a packet of b's that
// reaches the new conntrack before its client's is a new, denied
// b -> client connection (dropped; b retransmits). Denied pairs, local and
// across nodes, are probed throughout: none may connect, during the
// restart or after.
//
// a2 -> b:8081 carries data only from b, so after the restart b's packets
// reach conntrack first and are dropped as that denied b -> a2
// connection: it stalls until a2 sends a packet (here a byte; a keepalive
// would do), which conntrack picks up as an allowed a2 -> b connection.
// The test asserts the recovery, with every byte in order, and logs
// whether the connection stalled. The same kind of connection between pods
// no policy selects (d -> c:8081) must resume on its own: its reverse
// direction is allowed too.
func TestOVSRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 2)
	kube := l.Client()
	client := map[string]string{"role": "client"}
	createRestartPods(t, ctx, kube, ovsrNS, []restartPod{
		{"b", "node1", nil}, {"c", "node1", nil}, {"a1", "node1", client},
		{"a2", "node2", client}, {"d", "node2", nil},
	})
	pods, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	pod := func(name string) probe.Pod { return findPod(t, pods, ovsrNS, name) }
	addr := func(name string) netip.Addr { return netip.MustParseAddr(pod(name).IP) }
	serveStream(t, pod("b"))
	servePush(t, pod("b"))
	servePush(t, pod("c"))
	connects := func(from, to string, port int, timeout time.Duration) bool {
		_, err := dialFrom(ctx, pod(from).Netns, netip.Addr{}, probe.TCP, addr(to), port, timeout)
		return err == nil
	}
	type pair struct {
		from, to string
		port     int
		allowed  bool // with the policies (all are without)
	}
	name := func(p pair) string { return fmt.Sprintf("%s -> %s:%d", p.from, p.to, p.port) }
	pairs := []pair{
		{"a1", "b", streamPort, true}, {"a2", "b", streamPort, true}, {"a2", "b", pushPort, true},
		{"d", "c", pushPort, true},
		{"c", "b", streamPort, false}, {"d", "b", streamPort, false},
		{"b", "a1", 80, false}, {"b", "a2", 80, false},
	}
	waitVerdicts := func(policies bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var wrong []string
			for _, p := range pairs {
				if got := connects(p.from, p.to, p.port, 500*time.Millisecond); got != (p.allowed || !policies) {
					wrong = append(wrong, fmt.Sprintf("%s connects=%v", name(p), got))
				}
			}
			if len(wrong) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("wrong verdicts after 30s (policies: %v): %s", policies, strings.Join(wrong, ", "))
			}
		}
	}
	waitVerdicts(false) // every server answers
	createRestartPolicies(t, ctx, kube)
	waitVerdicts(true)
	t.Log("policies in force: a1, a2 -> b:8080,8081 allowed; c, d -> b and b -> a1, a2 denied")

	streams := map[string]*lineStream{"a1": openLineStream(t, ctx, pod("a1"), addr("b")), "a2": openLineStream(t, ctx, pod("a2"), addr("b"))}
	push := openPush(t, ctx, pod("a2"), addr("b"))
	control := openPush(t, ctx, pod("d"), addr("c"))
	// The denied pairs are probed while node1's OVS restarts and after,
	// two probes at a time each; any connection is a hole.
	var holes []string
	var holesMu sync.Mutex
	var attempts, attemptsRestarting atomic.Int64
	var restarting atomic.Bool
	probeCtx, stopProbes := context.WithCancel(ctx)
	var probes sync.WaitGroup
	for _, p := range pairs {
		if p.allowed {
			continue
		}
		for range 2 {
			probes.Add(1)
			go func() {
				defer probes.Done()
				for probeCtx.Err() == nil {
					during := restarting.Load()
					if _, err := dialFrom(probeCtx, pod(p.from).Netns, netip.Addr{}, probe.TCP, addr(p.to), p.port, 200*time.Millisecond); err == nil {
						holesMu.Lock()
						holes = append(holes, fmt.Sprintf("%s at %s (during the restart: %v)", name(p), time.Now().Format(time.StampMilli), during))
						holesMu.Unlock()
					}
					attempts.Add(1)
					if during {
						attemptsRestarting.Add(1)
					}
				}
			}()
		}
	}

	time.Sleep(time.Second)
	node1 := l.NodeOVS(1)
	flowsBefore, err := node1.DumpFlows(node1.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	pidBefore := vswitchdPid(t, l)
	echoedBefore := map[string]int64{}
	for k, s := range streams {
		echoedBefore[k] = s.echoed.Load()
	}
	restarting.Store(true)
	start := time.Now()
	if err := l.RestartOVS(ctx, 1); err != nil {
		t.Fatalf("restarting node1's ovs-vswitchd: %v", err)
	}
	restarted := time.Now()
	took := restarted.Sub(start)
	restarting.Store(false)
	if pid := vswitchdPid(t, l); pid == pidBefore {
		t.Fatalf("ovs-vswitchd still runs as pid %d: it did not restart", pid)
	}
	flowsAfter, err := node1.DumpFlows(node1.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(flowsBefore, flowsAfter); diff != "" {
		t.Errorf("node1's flows after the restart differ from before (-before +after):\n%s", diff)
	}
	echoedRestarted := map[string]int64{}
	for k, s := range streams {
		echoedRestarted[k] = s.echoed.Load()
	}
	pushRestarted, controlRestarted := push.received.Load(), control.received.Load()
	t.Logf("ovs-vswitchd restarted and forwarding with all %d flows again in %s; lines echoed before and at the end of the restart: %v, %v",
		len(flowsAfter), took.Round(time.Millisecond), echoedBefore, echoedRestarted)
	controlResumed := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !controlResumed; time.Sleep(50 * time.Millisecond) {
		controlResumed = control.received.Load() > controlRestarted
	}
	if !controlResumed {
		t.Errorf("d -> c:8081 (no policy; only c sends) did not resume within 3s of the restart (%d lines then and now)", controlRestarted)
	}
	time.Sleep(3 * time.Second)
	stopProbes()
	probes.Wait()
	for k, s := range streams {
		if n := s.echoed.Load(); n <= echoedRestarted[k] {
			t.Errorf("%s -> b:%d: no data flowed after the restart (%d lines echoed at its end, %d seconds later)", k, streamPort, echoedRestarted[k], n)
		}
	}
	if len(holes) > 0 {
		t.Errorf("denied pairs connected %d of %d times:\n%s", len(holes), attempts.Load(), strings.Join(holes, "\n"))
	}
	if attemptsRestarting.Load() == 0 {
		t.Errorf("no denied probe ran during the restart")
	}
	t.Logf("%d denied probes (%d started during the restart), none connected", attempts.Load(), attemptsRestarting.Load())

	// b -> a2 only: did it resume without a packet from a2?
	resumedAlone := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !resumedAlone; time.Sleep(100 * time.Millisecond) {
		resumedAlone = push.received.Load() > pushRestarted
	}
	t.Logf("a2 -> b:8081 (only b sends; b -> a2 denied): resumed on its own within %s of the restart: %v (%d lines at the restart, %d now)",
		time.Since(restarted).Round(time.Second), resumedAlone, pushRestarted, push.received.Load())
	for _, table := range []string{"EgressDefault", "IngressDefault"} {
		if out, err := node1.Ofctl("--names", "dump-flows", "table="+table); err == nil {
			t.Logf("node1 table %s since the restart:\n%s", table, out)
		}
	}
	if err := push.nudge(); err != nil {
		t.Errorf("a2 could not send on the b:8081 connection: %v", err)
	}
	nudged, resumed := push.received.Load(), false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !resumed; time.Sleep(100 * time.Millisecond) {
		resumed = push.received.Load() > nudged
	}
	if !resumed {
		t.Errorf("the b -> a2 stream on a2 -> b:8081 did not resume within 20s after a2 sent a byte")
	}

	// The connections as node1's conntrack knows them now: committed again
	// after the restart, from the middle of the stream.
	if out, err := node1.Appctl("dpctl/dump-conntrack", "zone=65520"); err == nil {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "dst="+pod("b").IP+",") && strings.Contains(line, "state=ESTABLISHED") {
				t.Logf("node1 conntrack after the restart: %s", line)
			}
		}
	}
	// A picked-up connection must not be judged invalid (window tracking
	// without the handshake): the +inv drop flow counts since the restart
	// re-added it.
	if n := invalidDrops(t, l); n != 0 {
		t.Errorf("%d packets dropped as ct_state=+inv on node1 since the restart", n)
	}
	for _, p := range []struct {
		name string
		s    *pushStream
	}{{"a2 -> b:8081", push}, {"d -> c:8081", control}} {
		if n, err := p.s.stop(); err != nil {
			t.Errorf("the server's stream on %s failed: %v", p.name, err)
		} else {
			t.Logf("%s: %d lines received in order", p.name, n)
		}
	}
	for k, s := range streams {
		sent, echoed, maxGap, err := s.stop()
		if err != nil {
			t.Errorf("%s -> b:%d failed across the OVS restart: %v", k, streamPort, err)
		}
		if echoed != sent {
			t.Errorf("%s -> b:%d: %d lines sent, %d echoed back in order", k, streamPort, sent, echoed)
		}
		t.Logf("%s -> b:%d: %d lines (%d bytes) sent and echoed back in order; longest pause between two echoes %s",
			k, streamPort, sent, sent*lineLen, maxGap.Round(time.Millisecond))
	}

	for _, p := range pairs {
		for range 3 {
			if got := connects(p.from, p.to, p.port, 500*time.Millisecond); got != p.allowed {
				t.Errorf("after the restart %s connects=%v, want %v", name(p), got, p.allowed)
			}
		}
	}
}

// restartPod is a pod bound to a node, labeled pod=<name> and with labels.
type restartPod struct {
	name, node string
	labels     map[string]string
}

// createRestartPods creates namespace ns and the pods, each serving TCP port
// 80 (the lab's test server), and waits until they run.
func createRestartPods(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns string, pods []restartPod) {
	t.Helper()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		labels := map[string]string{"pod": p.name}
		maps.Copy(labels, p.labels)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{
				Name: "server", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
				Ports: []corev1.ContainerPort{{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
			}}},
		}
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPods(t, ctx, kube, ns, len(pods), 90*time.Second)
}

// createRestartPolicies allows only clients (role=client) -> b:8080,8081
// among the clients and b: b accepts them, the clients accept nothing,
// and b may open nothing.
func createRestartPolicies(t *testing.T, ctx context.Context, kube kubernetes.Interface) {
	t.Helper()
	port, push := intstr.FromInt32(streamPort), intstr.FromInt32(pushPort)
	b := metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}
	clients := metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}
	for _, np := range []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: ovsrNS, Name: "b-from-clients"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: b,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &clients}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}, {Port: &push}},
			}},
		},
	}, {
		ObjectMeta: metav1.ObjectMeta{Namespace: ovsrNS, Name: "b-no-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: b,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}, {
		ObjectMeta: metav1.ObjectMeta{Namespace: ovsrNS, Name: "clients-no-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: clients,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}} {
		if _, err := kube.NetworkingV1().NetworkPolicies(ovsrNS).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// vswitchdPid is the pid of node1's ovs-vswitchd.
func vswitchdPid(t *testing.T, l *lab.Lab) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(l.NodeOVS(1).Dir, "vswitchd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("vswitchd.pid: %v", err)
	}
	return pid
}

// lineLen is the length of a lineStream line, newline included.
const lineLen = 1024

// lineStream writes numbered lines of lineLen bytes over a TCP connection
// to serveStream, one a millisecond without waiting for their echoes, and
// reads the echoes, checking that each is the next line. While the path is
// cut the lines queue in the socket, so it resumes with a burst.
type lineStream struct {
	conn    *net.TCPConn
	sent    atomic.Int64
	echoed  atomic.Int64
	quit    chan struct{}
	wrote   chan error
	read    chan error
	maxGap  time.Duration // written by the reader before read is sent
	timeout time.Duration
}

func openLineStream(t *testing.T, ctx context.Context, from probe.Pod, to netip.Addr) *lineStream {
	t.Helper()
	conn := dialTCP(t, ctx, from, to, streamPort, net.Dialer{})
	s := &lineStream{conn: conn.(*net.TCPConn), quit: make(chan struct{}), wrote: make(chan error, 1), read: make(chan error, 1),
		timeout: 20 * time.Second}
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // the greeting
		t.Fatalf("reading the stream's greeting: %v", err)
	}
	go func() { s.wrote <- s.write() }()
	go func() { s.read <- s.readEchoes(r) }()
	return s
}

func line(i int64) string {
	head := fmt.Sprintf("line %09d ", i)
	return head + strings.Repeat(string(rune('a'+i%26)), lineLen-len(head)-1) + "\n"
}

func (s *lineStream) write() error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := int64(0); ; i++ {
		select {
		case <-s.quit:
			// Half-close: the server echoes what it got, then closes.
			return s.conn.CloseWrite()
		case <-tick.C:
		}
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
		if _, err := io.WriteString(s.conn, line(i)); err != nil {
			return fmt.Errorf("sending line %d: %w", i, err)
		}
		s.sent.Store(i + 1)
	}
}

func (s *lineStream) readEchoes(r *bufio.Reader) error {
	last := time.Now()
	for i := int64(0); ; i++ {
		_ = s.conn.SetReadDeadline(time.Now().Add(s.timeout))
		got, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && got == "" {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the echo of line %d: %w", i, err)
		}
		if want := line(i); got != want {
			return fmt.Errorf("echo %d is %.24q..., want %.24q...", i, got, want)
		}
		now := time.Now()
		s.maxGap = max(s.maxGap, now.Sub(last))
		last = now
		s.echoed.Store(i + 1)
	}
}

// stop ends the stream: the writer half-closes, the reader reads the
// remaining echoes until the server closes. It returns the lines sent,
// the lines echoed in order, the longest pause between two echoes, and
// the first error.
func (s *lineStream) stop() (sent, echoed int64, maxGap time.Duration, err error) {
	close(s.quit)
	werr := <-s.wrote
	rerr := <-s.read
	return s.sent.Load(), s.echoed.Load(), s.maxGap, errors.Join(werr, rerr)
}

// invalidDrops is the packet count of node1's ct_state=+inv drop flow.
func invalidDrops(t *testing.T, l *lab.Lab) int64 {
	t.Helper()
	out, err := l.NodeOVS(1).Ofctl("--names", "dump-flows", "table=ConntrackState")
	if err != nil {
		t.Fatalf("dump-flows table=ConntrackState: %v", err)
	}
	for _, f := range strings.Split(out, "\n") {
		if !strings.Contains(f, "+inv") {
			continue
		}
		m := nPacketsRE.FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("no n_packets in %q", f)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	t.Fatalf("no ct_state=+inv flow in table ConntrackState:\n%s", out)
	return 0
}

var nPacketsRE = regexp.MustCompile(`n_packets=(\d+)`)

// pushPort is where servePush listens.
const pushPort = 8081

// servePush listens on pushPort in pod p's network namespace and sends
// every connection numbered lines, one a millisecond, until it fails; what
// the client sends is read and discarded.
func servePush(t *testing.T, p probe.Pod) {
	t.Helper()
	serveTCP(t, p, pushPort, func(c net.Conn) {
		go func() { _, _ = io.Copy(io.Discard, c) }()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := int64(0); ; i++ {
			<-tick.C
			if _, err := io.WriteString(c, line(i)); err != nil {
				return
			}
		}
	})
}

// pushStream is the client side of a servePush connection: it only reads
// (no keepalive either), checking that each line is the next one.
type pushStream struct {
	conn     *net.TCPConn
	received atomic.Int64
	done     chan error
}

func openPush(t *testing.T, ctx context.Context, from probe.Pod, to netip.Addr) *pushStream {
	t.Helper()
	conn := dialTCP(t, ctx, from, to, pushPort, net.Dialer{KeepAlive: -1})
	p := &pushStream{conn: conn.(*net.TCPConn), done: make(chan error, 1)}
	go func() {
		r := bufio.NewReader(conn)
		for i := int64(0); ; i++ {
			got, err := r.ReadString('\n')
			if err != nil {
				p.done <- fmt.Errorf("reading line %d: %w", i, err)
				return
			}
			if want := line(i); got != want {
				p.done <- fmt.Errorf("line %d is %.24q..., want %.24q...", i, got, want)
				return
			}
			p.received.Store(i + 1)
		}
	}()
	return p
}

// nudge sends one byte to the server.
func (p *pushStream) nudge() error {
	_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := p.conn.Write([]byte{'\n'})
	return err
}

// stop closes the connection and returns the lines received in order and
// the reader's error, if it failed before.
func (p *pushStream) stop() (int64, error) {
	select {
	case err := <-p.done:
		return p.received.Load(), err
	default:
	}
	p.conn.Close()
	<-p.done // the read error of the close
	return p.received.Load(), nil
}

//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/nsexec"
	"palisade.dev/palisade/test/lab/probe"
)

const (
	dpNS       = "dp"
	streamPort = 8080
	// agentAPI is the agent's default --api-bind-address, inside its node's
	// network namespace.
	agentAPI = "127.0.0.1:10350"
)

// TestDatapathAgentRestart restarts the agent while an allowed TCP
// connection sends continuously: the connection must survive without an
// error and keep flowing, a denied connection must stay denied during and
// after the restart, and the node's /metrics must count the sessions of the
// rule that allowed the connection.
func TestDatapathAgentRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 1)
	kube := l.Client()
	createPods(t, ctx, kube, dpNS, "a", "b", "c")
	pods, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := findPod(t, pods, dpNS, "a"), findPod(t, pods, dpNS, "b"), findPod(t, pods, dpNS, "c")
	bIP := netip.MustParseAddr(b.IP)
	serveStream(t, b)

	if _, err := kube.NetworkingV1().NetworkPolicies(dpNS).Create(ctx, bFromAPolicy(dpNS, streamPort), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reachable := func(from probe.Pod) bool {
		_, err := dialFrom(ctx, from.Netns, netip.Addr{}, probe.TCP, bIP, streamPort, 500*time.Millisecond)
		return err == nil
	}
	for deadline := time.Now().Add(30 * time.Second); !reachable(a) || reachable(c); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the policy did not take effect within 30s: a -> b:%d reachable=%v, c -> b:%d reachable=%v",
				streamPort, reachable(a), streamPort, reachable(c))
		}
	}
	t.Logf("policy in force: a -> b:%d allowed, c -> b:%d denied", streamPort, streamPort)

	stream := openStream(t, ctx, a, bIP)
	// c keeps trying while the agent restarts; any success is a hole.
	var holes, attempts atomic.Int64
	probeCtx, stopProbes := context.WithCancel(ctx)
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		for probeCtx.Err() == nil {
			attempts.Add(1)
			if _, err := dialFrom(probeCtx, c.Netns, netip.Addr{}, probe.TCP, bIP, streamPort, 300*time.Millisecond); err == nil {
				holes.Add(1)
			}
		}
	}()

	roundBefore := checkRound(t, l, 0)
	time.Sleep(time.Second)
	before := stream.echoes.Load()
	start := time.Now()
	if err := l.RestartAgent(ctx, 1); err != nil {
		t.Fatalf("restarting the agent: %v", err)
	}
	restarted := stream.echoes.Load()
	t.Logf("agent restarted in %s; %d echoes before, %d by the end of the restart", time.Since(start).Round(time.Millisecond), before, restarted)
	time.Sleep(2 * time.Second)
	stopProbes()
	probes.Wait()
	after := stream.echoes.Load()
	if err := stream.stop(); err != nil {
		t.Errorf("the allowed connection failed across the agent restart: %v", err)
	}
	if after <= restarted {
		t.Errorf("no data flowed after the agent restart (%d echoes at the restart, %d two seconds later)", restarted, after)
	}
	if n := holes.Load(); n > 0 {
		t.Errorf("c -> b:%d, which the policy denies, connected %d of %d times during or just after the restart", streamPort, n, attempts.Load())
	}
	t.Logf("connection alive: %d echoes in total; %d denied attempts from c, none connected", after, attempts.Load())
	checkRound(t, l, roundBefore+1)
	for range 3 {
		if reachable(c) {
			t.Errorf("c -> b:%d connected after the restart", streamPort)
		}
	}

	// New sessions after the restart (which re-added every flow, and so
	// restarted its counters) are counted by the rule that allowed them.
	for range 3 {
		if !reachable(a) {
			t.Errorf("a -> b:%d failed after the restart", streamPort)
		}
	}
	checkAgentMetrics(t, ctx, layout.NodeNetns(1))

	// What an operator sees: the rule's counters and the label of the
	// connection it allowed.
	for _, table := range []string{"IngressRule", "IngressMetric", "ConntrackCommit"} {
		out, err := l.NodeOVS(1).Ofctl("--names", "dump-flows", "table="+table)
		if err != nil {
			t.Fatalf("dump-flows table=%s: %v", table, err)
		}
		t.Logf("node1 table %s:\n%s", table, out)
	}
	if out, err := l.NodeOVS(1).Appctl("dpctl/dump-conntrack", "zone=65520"); err == nil {
		t.Logf("node1 conntrack zone 65520:\n%s", out)
	}
}

var cookieRE = regexp.MustCompile(`cookie=0x([0-9a-f]+)`)

// checkRound checks that node1's bridge records a restart round (want, if
// not 0) in external_ids and that every flow's cookie carries it; it
// returns the round.
func checkRound(t *testing.T, l *lab.Lab, want uint64) uint64 {
	t.Helper()
	inst := l.NodeOVS(1)
	out, err := inst.Vsctl("get", "bridge", inst.Bridge, "external_ids:palisade-round")
	if err != nil {
		t.Fatalf("reading the restart round: %v", err)
	}
	round, err := strconv.ParseUint(strings.Trim(strings.TrimSpace(out), `"`), 10, 8)
	if err != nil || round == 0 || want != 0 && round != want {
		t.Fatalf("external_ids:palisade-round = %q, want %d", out, want)
	}
	flows, err := inst.DumpFlows(inst.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		m := cookieRE.FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("flow without a cookie: %s", f)
		}
		if c, err := strconv.ParseUint(m[1], 16, 64); err != nil || c>>56 != round {
			t.Fatalf("flow of another round than %d: %s", round, f)
		}
	}
	t.Logf("restart round %d in external_ids and in the cookies of all %d flows", round, len(flows))
	return round
}

func findPod(t *testing.T, pods []probe.Pod, ns, name string) probe.Pod {
	t.Helper()
	for _, p := range pods {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("pod %s/%s not found in %v", ns, name, pods)
	return probe.Pod{}
}

// serveStream listens on streamPort in pod p's network namespace: it greets
// every connection with a line (so dialFrom's probes succeed) and then
// echoes each line back.
func serveStream(t *testing.T, p probe.Pod) {
	t.Helper()
	serveTCP(t, p, streamPort, func(c net.Conn) {
		if _, err := fmt.Fprintln(c, p.Key()); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	})
}

// dialTCP opens a TCP connection from pod from's network namespace to
// to:port with d (a 2 s connect timeout unless d sets one); it is closed
// when the test ends.
func dialTCP(t *testing.T, ctx context.Context, from probe.Pod, to netip.Addr, port int, d net.Dialer) net.Conn {
	t.Helper()
	if d.Timeout == 0 {
		d.Timeout = 2 * time.Second
	}
	var conn net.Conn
	if err := nsexec.Do(from.Netns, func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort(to.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatalf("opening TCP %s -> %s:%d: %v", from.Key(), to, port, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serveTCP listens on port in pod p's network namespace until the test
// ends and runs serve for every connection (which it closes after).
func serveTCP(t *testing.T, p probe.Pod, port int, serve func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	if err := nsexec.Do(p.Netns, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", p.Key(), err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

// stream is a TCP connection that sends a line every 10ms and reads its
// echo, until stopped or an error.
type stream struct {
	conn   net.Conn
	echoes atomic.Int64
	done   chan struct{}
	err    error // set before done closes
	quit   chan struct{}
}

func openStream(t *testing.T, ctx context.Context, from probe.Pod, to netip.Addr) *stream {
	t.Helper()
	conn := dialTCP(t, ctx, from, to, streamPort, net.Dialer{})
	s := &stream{conn: conn, done: make(chan struct{}), quit: make(chan struct{})}
	r := bufio.NewReader(conn)
	go func() {
		defer close(s.done)
		if _, err := r.ReadString('\n'); err != nil { // the greeting
			s.err = err
			return
		}
		for i := 0; ; i++ {
			select {
			case <-s.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			// A restart that dropped packets for longer than TCP's
			// retransmissions cover would show as a timeout here.
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			msg := fmt.Sprintf("message %d", i)
			if _, err := fmt.Fprintln(conn, msg); err != nil {
				s.err = fmt.Errorf("sending %q: %w", msg, err)
				return
			}
			line, err := r.ReadString('\n')
			if err != nil {
				s.err = fmt.Errorf("reading the echo of %q: %w", msg, err)
				return
			}
			if strings.TrimSpace(line) != msg {
				s.err = fmt.Errorf("echo of %q was %q", msg, line)
				return
			}
			s.echoes.Add(1)
		}
	}()
	return s
}

func (s *stream) stop() error {
	close(s.quit)
	<-s.done
	return s.err
}

// agentGet fetches path from the agent API inside a node's network
// namespace.
func agentGet(ctx context.Context, netns, path string) (int, string, error) {
	return agentGetAt(ctx, netns, agentAPI, path)
}

// agentGetAt is agentGet from an agent API served at addr (host:port).
func agentGetAt(ctx context.Context, netns, addr, path string) (int, string, error) {
	nsPath := filepath.Join("/var/run/netns", netns)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := nsexec.Do(nsPath, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

var sessionsMetric = regexp.MustCompile(`(?m)^palisade_agent_rule_sessions_total\{direction="Ingress",policy_name="b-from-a",policy_namespace="dp",rule="0"\} (\d+)$`)

// checkAgentMetrics waits until the agent reports sessions of the rule that
// allowed the stream (OVS credits flow counters about once a second) and
// checks that it is ready and healthy.
func checkAgentMetrics(t *testing.T, ctx context.Context, netns string) {
	t.Helper()
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body, err := agentGet(ctx, netns, path)
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s on %s: %d %q %v", path, netns, code, body, err)
		}
	}
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		code, b, err := agentGet(ctx, netns, "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics on %s: %d %v", netns, code, err)
		}
		body = b
		if m := sessionsMetric.FindStringSubmatch(body); m != nil && m[1] != "0" {
			t.Logf("agent metrics: %s", m[0])
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "palisade_agent_rule_") || strings.HasPrefix(l, "palisade_agent_default_drop") ||
					strings.HasPrefix(l, `palisade_agent_flows{table="IngressMetric"}`) {
					t.Log(l)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "palisade_agent_") {
			lines = append(lines, l)
		}
	}
	t.Fatalf("no sessions counted for dp/b-from-a ingress rule 0 within 10s:\n%s", strings.Join(lines, "\n"))
}

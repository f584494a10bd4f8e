//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/controller"
	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/proc"
)

// TestControllerHA runs a second palisade-controller next to the lab's,
// with the same agent-facing address (a standby does not listen on it) and
// its own metrics port, and checks leader election end to end: the second
// stays a standby (/readyz 503, leader gauge 0, the Lease held by the
// lab's controller); once the lab's controller stops (SIGTERM: it releases
// the Lease), the second takes the Lease, becomes ready, serves the
// agents, which reconnect to the same address and fetch its new CA, and
// its /metrics count the policies created afterwards.
func TestControllerHA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 1)
	kube := l.Client()
	labMetrics := "http://" + net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(lab.ControllerMetricsPort))
	const leaseNamespace = "palisade-system"

	t.Log("the lab's controller leads: it is ready, and holds the Lease")
	haWaitHTTP(t, ctx, labMetrics+"/readyz", http.StatusOK, "ok")
	if m := haScrape(t, ctx, labMetrics); !strings.Contains(m, "\npalisade_controller_leader 1\n") {
		t.Fatalf("the lab's controller does not report itself leader:\n%s", haGrep(m, "palisade_controller_leader"))
	}
	first := haLeaseHolder(t, ctx, kube, leaseNamespace)
	if first == "" {
		t.Fatal("the Lease has no holder while the lab's controller leads")
	}

	standbyMetrics := startStandby(t, ctx, l, leaseNamespace)
	t.Log("the second controller stands by: alive, not ready, not leader, not listening for agents")
	haWaitHTTP(t, ctx, standbyMetrics+"/healthz", http.StatusOK, "ok")
	time.Sleep(3 * time.Second) // several of its retry periods
	if code, body := haGet(t, ctx, standbyMetrics+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not the leader") {
		t.Fatalf("standby /readyz = %d %q, want 503 not the leader", code, body)
	}
	if m := haScrape(t, ctx, standbyMetrics); !strings.Contains(m, "\npalisade_controller_leader 0\n") {
		t.Fatalf("the standby does not report leader 0:\n%s", haGrep(m, "palisade_controller_leader"))
	}
	if h := haLeaseHolder(t, ctx, kube, leaseNamespace); h != first {
		t.Fatalf("the Lease moved to %q while the leader runs (was %q)", h, first)
	}

	t.Log("stopping the lab's controller: the standby must take over")
	stopLabController(t, ctx, l)
	start := time.Now()
	// The old leader released the Lease as it exited: no holder yet, or
	// already the standby (which would otherwise wait out the 4 s
	// lease duration it saw renewed).
	if h := haLeaseHolder(t, ctx, kube, leaseNamespace); h == first {
		t.Errorf("the stopped leader still holds the Lease (%q): it did not release it on SIGTERM", h)
	}
	var second string
	// The standby judges the Lease expired 4 s (its lease duration) after
	// it last saw it renewed; a leader that releases the Lease on SIGTERM
	// lets it take over at its next try (every 0.5 s). 2.5 s tells the two
	// apart.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		second = haLeaseHolder(t, ctx, kube, leaseNamespace)
		return second != "" && second != first, nil
	}); err != nil {
		t.Fatalf("the standby did not take the Lease within 2.5 s of the leader's SIGTERM (holder %q): did the leader release it?", second)
	}
	t.Logf("the Lease moved from %s to %s in %s", first, second, time.Since(start).Round(time.Millisecond))
	haWaitHTTP(t, ctx, standbyMetrics+"/readyz", http.StatusOK, "ok")
	t.Logf("the new leader is ready %s after the old one stopped", time.Since(start).Round(time.Millisecond))

	t.Log("the node's agent reconnects to the new leader")
	haWaitMetric(t, ctx, standbyMetrics, "palisade_controller_connected_agents", func(v float64) bool { return v == float64(l.Nodes()) })

	t.Log("a policy created now shows in the new leader's metrics")
	const ns = "ha"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPinnedPod(t, ctx, kube, ns, "web", "node1", map[string]string{"app": "web"})
	createPinnedPod(t, ctx, kube, ns, "client", "node1", map[string]string{"app": "client"})
	waitForPodIPs(t, ctx, kube, ns, 2)
	if _, err := kube.NetworkingV1().NetworkPolicies(ns).Create(ctx, podPolicy(ns, "web", "web", "client", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	positive := func(v float64) bool { return v > 0 }
	haWaitMetric(t, ctx, standbyMetrics, "palisade_controller_networkpolicies", positive)
	haWaitMetric(t, ctx, standbyMetrics, "palisade_controller_applied_to_groups", positive)
	haWaitMetric(t, ctx, standbyMetrics, "palisade_controller_address_groups", positive)
	m := haScrape(t, ctx, standbyMetrics)
	for _, series := range []string{
		`palisade_controller_workqueue_adds_total{name="networkpolicy"}`,
		`palisade_controller_workqueue_depth{name="group"}`,
		`palisade_controller_sync_duration_seconds_count{kind="policy"}`,
		"palisade_controller_leader 1",
	} {
		if !strings.Contains(m, series) {
			t.Errorf("the new leader's /metrics lacks %s", series)
		}
	}
}

// startStandby starts a second palisade-controller against the lab with
// short leader election timings and a free metrics port, and returns the
// base URL of its metrics server. It is stopped (SIGTERM) at cleanup.
func startStandby(t *testing.T, ctx context.Context, l *lab.Lab, leaseNamespace string) string {
	t.Helper()
	binDir := lab.DefaultBinDir()
	if !filepath.IsAbs(binDir) {
		binDir = filepath.Join("..", "..", binDir)
	}
	metricsAddr := net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(haFreePort(t)))
	logPath := filepath.Join(l.Dir(), "logs", "palisade-controller-standby.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "palisade-controller"),
		"--kubeconfig", l.Kubeconfig(),
		"--bind-address", layout.HostIP.String(),
		"--port", strconv.Itoa(layout.ControllerPort), // the lab's: free once the standby leads
		"--metrics-bind-address", metricsAddr,
		"--leader-elect-namespace", leaseNamespace,
		"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms",
		"--v=2")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("the second controller exited with %v after SIGTERM (log %s)", err, logPath)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("the second controller ignored SIGTERM for 15 s")
		}
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("second controller's log:\n%s", b)
			}
		}
	})
	go func() {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if ctx.Err() == nil {
				t.Errorf("the second controller exited early: %v", err)
			}
		case <-ctx.Done():
		}
	}()
	return "http://" + metricsAddr
}

// stopLabController stops the lab's palisade-controller with SIGTERM.
func stopLabController(t *testing.T, ctx context.Context, l *lab.Lab) {
	t.Helper()
	procs, err := proc.Read(layout.Dir(l.Dir()).Pids())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(procs, func(p *proc.Process) bool { return p.Name == "palisade-controller" })
	if i < 0 || !procs[i].Alive() {
		t.Fatal("the lab's palisade-controller is not running")
	}
	if err := procs[i].Stop(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func haFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(layout.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func haLeaseHolder(t *testing.T, ctx context.Context, kube kubernetes.Interface, namespace string) string {
	t.Helper()
	lease, err := kube.CoordinationV1().Leases(namespace).Get(ctx, controller.LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the Lease %s/%s: %v", namespace, controller.LeaseName, err)
	}
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// haGet returns the status and body of a GET, or 0 if the request failed.
func haGet(t *testing.T, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func haWaitHTTP(t *testing.T, ctx context.Context, url string, code int, body string) {
	t.Helper()
	var gotCode int
	var gotBody string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		gotCode, gotBody = haGet(t, ctx, url)
		return gotCode == code && strings.Contains(gotBody, body), nil
	}); err != nil {
		t.Fatalf("GET %s: %d %q, want %d %q", url, gotCode, gotBody, code, body)
	}
}

func haScrape(t *testing.T, ctx context.Context, base string) string {
	t.Helper()
	code, body := haGet(t, ctx, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %s", base, code, body)
	}
	return body
}

// haWaitMetric waits until the unlabelled series name satisfies ok.
func haWaitMetric(t *testing.T, ctx context.Context, base, name string, ok func(float64) bool) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	var last string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		m := re.FindStringSubmatch(haScrape(t, ctx, base))
		if m == nil {
			last = "absent"
			return false, nil
		}
		last = m[1]
		v, err := strconv.ParseFloat(m[1], 64)
		return err == nil && ok(v), nil
	}); err != nil {
		t.Fatalf("%s stays %s", name, last)
	}
}

func haGrep(s, prefix string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return fmt.Sprint(out)
}

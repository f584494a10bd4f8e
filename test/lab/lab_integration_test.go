//go:build integration

package lab_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/probe"
	"palisade.dev/palisade/test/lab/proc"
	"palisade.dev/palisade/test/lab/underlay"
)

// labBinary is palisade-lab built for this test run (it runs the node
// runtimes).
var labBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "plab-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	labBinary = filepath.Join(dir, "palisade-lab")
	out, err := exec.Command("go", "build", "-o", labBinary, "palisade.dev/palisade/cmd/palisade-lab").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build palisade-lab: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeCNI stands in for palisade-cni so that the lab itself can be tested
// without Palisade: it plugs the pod into a Linux bridge in node1's
// namespace and hands out 198.19.0.2, .3, ...
const fakeCNI = `#!/bin/bash
set -e
cat >/dev/null
node=plab-node1
ns=$(basename "$CNI_NETNS")
host=v${CNI_CONTAINERID:0:10}
dir=$(dirname "$0")
case $CNI_COMMAND in
ADD)
	ip -n $node link show cbr0 >/dev/null 2>&1 || { ip -n $node link add cbr0 type bridge; ip -n $node link set cbr0 up; }
	# The runtime runs ADDs concurrently: take the next address under a lock.
	n=$(flock $dir/ipcounter.lock sh -c 'n=$(( $(cat '$dir'/ipcounter 2>/dev/null || echo 1) + 1 )); echo $n >'$dir'/ipcounter; echo $n')
	ip -n $node link add $host type veth peer name $CNI_IFNAME netns $ns
	ip -n $node link set $host master cbr0 up
	ip -n $ns addr add 198.19.0.$n/24 dev $CNI_IFNAME
	ip -n $ns link set $CNI_IFNAME up
	echo "{\"cniVersion\":\"1.1.0\",\"ips\":[{\"address\":\"198.19.0.$n/24\"}]}"
	;;
DEL)
	ip -n $node link del $host 2>/dev/null || true
	echo "$CNI_CONTAINERID" >>$dir/deleted
	;;
esac
`

func requireK8sBinaries(t *testing.T) string {
	t.Helper()
	dir := lab.DefaultK8sBinDir()
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("Kubernetes binary %s missing in %s: run hack/bootstrap.sh (or set PALISADE_K8S_BIN)", b, dir)
		}
	}
	return dir
}

// labDir returns a short fresh directory (OVS socket paths must stay short)
// and makes sure the lab in it is gone at the end, even on failure.
func labDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "plab")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "lab")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.Down(ctx, dir, io.Discard); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.RemoveAll(parent)
	})
	return dir
}

func runLab(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(labBinary, args...).CombinedOutput()
	return string(out), err
}

// assertNothingLeft checks that the processes, network objects and files of
// a lab are gone.
func assertNothingLeft(t *testing.T, dir string, procs []*proc.Process) {
	t.Helper()
	for _, p := range procs {
		if p.Alive() {
			t.Errorf("process %s (pid %d) still running after down", p.Name, p.Pid)
		}
	}
	left, err := underlay.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("network objects left after down: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after down (stat: %v)", dir, err)
	}
}

func clientFor(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"pod": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}},
		}}},
	}
}

// TestUpDownCLI runs `palisade-lab up --no-palisade` and `down` as a user
// would: the node registers and gets a pod CIDR, the scheduler places a pod
// on it (which then waits in CNI ADD retries: there is no palisade-cni), a
// second `up` is refused, and `down` leaves nothing behind.
func TestUpDownCLI(t *testing.T) {
	requireK8sBinaries(t)
	dir := labDir(t)
	emptyBin := t.TempDir()
	start := time.Now()
	out, err := runLab(t, "up", "--no-palisade", "--dir", dir, "--bin-dir", emptyBin)
	if err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	t.Logf("up took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "export KUBECONFIG="+filepath.Join(dir, "kubeconfig")) {
		t.Errorf("up did not print the kubeconfig export:\n%s", out)
	}
	procs, err := proc.Read(filepath.Join(dir, "pids"))
	if err != nil || len(procs) != 5 {
		t.Fatalf("pid files: %v, %v; want 5 processes", procs, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := clientFor(t, filepath.Join(dir, "kubeconfig"))
	node, err := client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cidr, err := netip.ParsePrefix(node.Spec.PodCIDR)
	if err != nil || !netip.MustParsePrefix(layout.ClusterCIDR).Contains(cidr.Addr()) || cidr.Bits() != layout.NodeCIDRMaskSize {
		t.Errorf("node1 pod CIDR %q is not a /%d of %s", node.Spec.PodCIDR, layout.NodeCIDRMaskSize, layout.ClusterCIDR)
	}
	if len(node.Spec.Taints) != 0 {
		t.Errorf("node1 has taints %v", node.Spec.Taints)
	}

	if _, err := client.CoreV1().Pods("default").Create(ctx, testPod("default", "web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Scheduled by kube-scheduler, sandbox namespace made by the runtime.
	var netns string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pod, err := client.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || pod.Spec.NodeName != "node1" {
			return false, err
		}
		pods, err := lab.Pods(dir)
		if err != nil || len(pods) != 1 {
			return false, err
		}
		// The runtime records a pod before it creates its namespace (so
		// that down can always clean it): wait for the namespace as well.
		netns = pods[0].Netns
		_, err = os.Stat(netns)
		return err == nil, nil
	}); err != nil {
		t.Fatalf("pod web was not scheduled to node1 and given a netns (%q): %v", netns, err)
	}

	if out, err := runLab(t, "up", "--no-palisade", "--dir", dir, "--bin-dir", emptyBin); err == nil || !strings.Contains(out, "lab already running in "+dir) {
		t.Errorf("second up: err=%v, output:\n%s\nwant a 'lab already running' error", err, out)
	}

	start = time.Now()
	if out, err := runLab(t, "down", "--dir", dir); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	t.Logf("down took %v", time.Since(start).Round(time.Millisecond))
	assertNothingLeft(t, dir, procs)
	if out, err := runLab(t, "down", "--dir", dir); err != nil {
		t.Errorf("second down: %v\n%s", err, out)
	}
}

// TestPodsAndProbe drives the Go API with a fake palisade-cni: pods become
// Running with IPs, their test servers answer real TCP and UDP probes, a
// deleted pod's namespace is removed, and Down leaves nothing behind.
func TestPodsAndProbe(t *testing.T) {
	k8sBin := requireK8sBinaries(t)
	dir := labDir(t)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "palisade-cni"), []byte(fakeCNI), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Dir: dir, K8sBinDir: k8sBin, BinDir: bin, LabBinary: labBinary, NoPalisade: true})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	procs, err := proc.Read(filepath.Join(dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	client := l.Client()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := client.CoreV1().Pods("x").Create(ctx, testPod("x", name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods("x").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				return false, nil
			}
		}
		return len(pods.Items) == 2, nil
	}); err != nil {
		t.Fatalf("pods not Running: %v", err)
	}
	pods, err := l.Pods()
	if err != nil || len(pods) != 2 || pods[0].IP == "" || pods[1].IP == "" {
		t.Fatalf("Pods = %+v, %v; want 2 pods with IPs", pods, err)
	}

	tests := []struct {
		port    int
		proto   string
		allowed bool
	}{
		{80, probe.TCP, true},
		{53, probe.UDP, true},
		{81, probe.TCP, false},
	}
	for _, tc := range tests {
		res, err := probe.Matrix(ctx, pods, tc.port, tc.proto, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Cells {
			if c.Allowed != tc.allowed {
				t.Errorf("%s/%d %s -> %s: allowed=%v (%s), want %v", tc.proto, tc.port, c.From, c.To, c.Allowed, c.Error, tc.allowed)
			}
		}
	}

	if err := client.CoreV1().Pods("x").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods("x").Get(ctx, "a", metav1.GetOptions{})
		_, statErr := os.Stat(pods[0].Netns)
		return err != nil && os.IsNotExist(statErr), nil
	}); err != nil {
		t.Errorf("deleted pod x/a or its netns %s still exists: %v", pods[0].Netns, err)
	}
	if deleted, err := os.ReadFile(filepath.Join(bin, "deleted")); err != nil || len(strings.Fields(string(deleted))) != 1 {
		t.Errorf("CNI DEL calls: %q, %v; want one", deleted, err)
	}

	if err := l.Down(); err != nil {
		t.Fatalf("Down: %v", err)
	}
	assertNothingLeft(t, dir, procs)
}

//go:build e2e

// Package e2e runs Palisade end to end in the lab: a real kube-apiserver,
// palisade-controller, palisade-agent on a node with its own ovs-vswitchd,
// pods as network namespaces wired by palisade-cni, and real connections.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/probe"
)

// startLab brings up a fresh lab in a short temporary directory (OVS socket
// paths must stay short) and tears it down when the test ends.
func startLab(t *testing.T, ctx context.Context, nodes int) *lab.Lab {
	t.Helper()
	return startLabWith(t, ctx, lab.Options{Nodes: nodes})
}

// startLabWith is startLab with more options (Dir, BinDir and Progress are
// set here).
func startLabWith(t *testing.T, ctx context.Context, o lab.Options) *lab.Lab {
	t.Helper()
	binDir := lab.DefaultBinDir()
	if !filepath.IsAbs(binDir) {
		// go test runs in the package directory; ./bin is the repo's.
		binDir = filepath.Join("..", "..", binDir)
	}
	for _, b := range []string{"palisade-controller", "palisade-agent", "palisade-cni", "palisade-lab"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s is missing in %s (run `make build`, or set PALISADE_BIN_DIR): %v", b, binDir, err)
		}
	}
	dir, err := os.MkdirTemp("", "plab")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(dir); err != nil { // lab.Up creates it
		t.Fatal(err)
	}
	start := time.Now()
	o.Dir, o.BinDir, o.Progress = dir, binDir, testWriter{t}
	l, err := lab.Up(ctx, o)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up with %d node(s) in %s", o.Nodes, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, dir)
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	return l
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dumpLogs prints the end of every Palisade log of a failed lab.
func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "palisade-*.log"))
	more, _ := filepath.Glob(filepath.Join(dir, "nodes", "*", "logs", "*.log"))
	for _, f := range append(logs, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("--- last lines of %s\n%s", f, strings.Join(lines, "\n"))
	}
}

func createPods(t *testing.T, ctx context.Context, kube kubernetes.Interface, ns string, names ...string) {
	t.Helper()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n, Labels: map[string]string{"pod": n}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "server", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
				Ports: []corev1.ContainerPort{
					{Name: "serve-80-tcp", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
					{Name: "serve-81-tcp", ContainerPort: 81, Protocol: corev1.ProtocolTCP},
				},
			}}},
		}
		if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
			}
		}
		if running == len(names) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d pods in %s are Running after 90s", running, len(names), ns)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// expectation is a reachability model: allowed(from, to) for every pair.
type expectation func(from, to string) bool

func allAllowed(string, string) bool { return true }

// matches probes every pair once and returns the cells that differ from want
// (self-traffic, which never crosses the bridge, is ignored).
func matches(ctx context.Context, l *lab.Lab, port int, want expectation) (*probe.Result, []string, error) {
	pods, err := l.Pods()
	if err != nil {
		return nil, nil, err
	}
	res, err := probe.Matrix(ctx, pods, port, "TCP", time.Second)
	if err != nil {
		return nil, nil, err
	}
	var wrong []string
	for _, from := range pods {
		for _, to := range pods {
			if from.Key() == to.Key() {
				continue
			}
			got, ok := res.Allowed(from.Key(), to.Key())
			if !ok || got != want(from.Key(), to.Key()) {
				wrong = append(wrong, fmt.Sprintf("%s -> %s: allowed=%v, want %v", from.Key(), to.Key(), got, !got))
			}
		}
	}
	return res, wrong, nil
}

// eventually probes until the matrix matches want, and returns when the
// first matching round started: an upper bound of the time the change took
// (a blocked cell costs the probe's timeout, which is not realization time).
// A real connection per cell per round; fails after timeout with the last
// observed matrix.
func eventually(t *testing.T, ctx context.Context, l *lab.Lab, port int, want expectation, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		round := time.Since(start)
		res, wrong, err := matches(ctx, l, port, want)
		if err != nil {
			t.Fatal(err)
		}
		if len(wrong) == 0 {
			t.Logf("observed within %s:\n%s", round.Round(time.Millisecond), res.Table())
			return round
		}
		if time.Since(start) > timeout {
			t.Fatalf("reachability did not converge within %s; wrong cells:\n%s\nlast observed:\n%s",
				timeout, strings.Join(wrong, "\n"), res.Table())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSkeletonPolicyChangesVerdicts is the walking skeleton: a NetworkPolicy
// created through the apiserver turns real TCP connections from allowed to
// blocked, and its deletion turns them back.
func TestSkeletonPolicyChangesVerdicts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 1)
	kube := l.Client()
	createPods(t, ctx, kube, "x", "a", "b", "c")

	t.Log("before any policy every pod reaches every other on TCP 80")
	eventually(t, ctx, l, 80, allAllowed, 10*time.Second)

	if _, err := kube.NetworkingV1().NetworkPolicies("x").Create(ctx, bFromAPolicy("x", 80), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Log("with the policy only x/a reaches x/b; everything else is unchanged")
	bFromA := func(from, to string) bool { return to != "x/b" || from == "x/a" }
	took := eventually(t, ctx, l, 80, bFromA, 10*time.Second)
	t.Logf("policy realized (creation to matching matrix) in %s", took.Round(time.Millisecond))

	t.Log("the policy allows TCP 80 only: x/a cannot reach x/b on another port")
	eventually(t, ctx, l, 81, func(from, to string) bool { return to != "x/b" }, 10*time.Second)

	if err := kube.NetworkingV1().NetworkPolicies("x").Delete(ctx, "b-from-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Log("after deleting the policy every pod reaches every other again")
	took = eventually(t, ctx, l, 80, allAllowed, 10*time.Second)
	t.Logf("deletion realized in %s", took.Round(time.Millisecond))
}

func ptr[T any](v T) *T { return &v }

// bFromAPolicy is the tests' usual policy, ns/b-from-a: pod b (label
// pod=b) accepts TCP port from pod a only.
func bFromAPolicy(ns string, port int32) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b-from-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr(corev1.ProtocolTCP), Port: ptr(intstr.FromInt32(port))}},
			}},
		},
	}
}

//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/test/e2e/netpol"
	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/probe"
	"palisade.dev/palisade/test/ovsinstance"
)

// Environment of the NetworkPolicy suite.
const (
	// npEnvNodes is the lab's node count (default npDefaultNodes).
	npEnvNodes     = "PALISADE_E2E_NODES"
	npDefaultNodes = 3
	// npEnvLatencyOut, when set, is a file the suite writes its realization
	// latency table to (Markdown).
	npEnvLatencyOut = "PALISADE_E2E_LATENCY_OUT"
)

const (
	// npSettleLimit bounds how long a change may take to show in the matrix.
	npSettleLimit = 10 * time.Second
	// npPodReadyLimit bounds how long a pod may take to run.
	npPodReadyLimit = 90 * time.Second
	// npNamespaceLabel is set on every namespace by the apiserver.
	npNamespaceLabel = "kubernetes.io/metadata.name"
)

// The suite's model: pods a, b, c in namespaces x, y, z.
var (
	npNamespaces = []string{"x", "y", "z"}
	npPodNames   = []string{"a", "b", "c"}
	npPorts      = []int32{80, 81}
)

// npServedPorts are the container ports of every model pod: 80 and 81 on
// TCP, UDP and SCTP, named serve-<port>-<proto>. The lab serves TCP and
// UDP; SCTP ports are declared (so named ports resolve) but not served.
func npServedPorts() []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, port := range npPorts {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			out = append(out, corev1.ContainerPort{
				Name:          fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))),
				ContainerPort: port, Protocol: proto,
			})
		}
	}
	return out
}

// netpolSuite is the state shared by every case: one lab, its model pods
// (created once) and the latency samples.
type netpolSuite struct {
	ctx    context.Context
	lab    *lab.Lab
	kube   kubernetes.Interface
	nodes  int
	prober *netpol.Prober
	rec    *netpol.Recorder
	// placed counts pods created, to spread them over the nodes.
	placed int
	// base are the model pods, "namespace/name".
	base []string
}

// netpolCase is one scenario.
type netpolCase struct {
	name string
	run  func(c *npCtx)
}

func npNodes(t *testing.T) int {
	v := os.Getenv(npEnvNodes)
	if v == "" {
		return npDefaultNodes
	}
	n, err := strconv.Atoi(v)
	if err != nil || layout.ValidateNodeCount(n) != nil {
		t.Fatalf("%s=%q: want a node count 1..%d", npEnvNodes, v, layout.MaxNodes)
	}
	return n
}

// TestNetpol runs the upstream NetworkPolicy scenarios (and Palisade's
// extras) against a fresh lab: run one with
// `make e2e RUN=TestNetpol/DefaultDenyIngress`.
func TestNetpol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	nodes := npNodes(t)
	l := startLab(t, ctx, nodes)
	s := &netpolSuite{
		ctx: ctx, lab: l, kube: l.Client(), nodes: nodes,
		prober: &netpol.Prober{Tracer: &netpol.Tracer{OVS: func(node string) (*ovsinstance.Instance, error) {
			i, err := layout.NodeIndex(node)
			if err != nil {
				return nil, err
			}
			return l.NodeOVS(i), nil
		}}},
		rec: &netpol.Recorder{},
	}
	start := time.Now()
	s.setUp(t)
	t.Logf("model pods running and reachable on %d node(s) in %s", nodes, time.Since(start).Round(time.Millisecond))
	for _, c := range append(npUpstreamCases(), npExtraCases()...) {
		t.Run(c.name, func(t *testing.T) { s.run(t, c) })
	}
	s.reportLatency(t)
}

// setUp creates the namespaces and pods of the model and waits until every
// pod reaches every other.
func (s *netpolSuite) setUp(t *testing.T) {
	t.Helper()
	for _, ns := range npNamespaces {
		if _, err := s.kube.CoreV1().Namespaces().Create(s.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, name := range npPodNames {
			s.createPod(t, ns, name, map[string]string{"pod": name}, npServedPorts())
			s.base = append(s.base, ns+"/"+name)
		}
	}
	s.waitPods(t, s.base)
	c := &npCtx{T: t, s: s, pods: slices.Clone(s.base), priors: map[npKey]npPrior{}, gen: 1}
	for _, proto := range []string{netpol.TCP, netpol.UDP} {
		c.validate(80, proto, c.reach())
	}
}

// createPod creates a pod bound to the next node (round robin).
func (s *netpolSuite) createPod(t *testing.T, ns, name string, labels map[string]string, ports []corev1.ContainerPort) {
	t.Helper()
	node := layout.NodeName(s.placed%s.nodes + 1)
	s.placed++
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name: "server", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53", Ports: ports,
			}},
		},
	}
	if _, err := s.kube.CoreV1().Pods(ns).Create(s.ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
}

// waitPods waits until every pod ("namespace/name") is Running in the API
// and has an address in the lab.
func (s *netpolSuite) waitPods(t *testing.T, keys []string) {
	t.Helper()
	deadline := time.Now().Add(npPodReadyLimit)
	for {
		missing := s.notReady(keys)
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods not running with an address after %s: %s", npPodReadyLimit, strings.Join(missing, " "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *netpolSuite) notReady(keys []string) []string {
	labPods, _ := s.lab.Pods()
	withIP := map[string]bool{}
	for _, p := range labPods {
		withIP[p.Key()] = p.IP != ""
	}
	var missing []string
	for _, k := range keys {
		ns, name, _ := strings.Cut(k, "/")
		p, err := s.kube.CoreV1().Pods(ns).Get(s.ctx, name, metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning || !withIP[k] {
			missing = append(missing, k)
		}
	}
	return missing
}

func (s *netpolSuite) reportLatency(t *testing.T) {
	rep := s.rec.Report()
	t.Logf("realization latency (from the API call to the probes showing the new verdict; at most %d changed pairs measured per change):\n%s\nper change:\n%s",
		netpol.MaxMeasuredPairs, rep.Markdown(), s.rec.Detail())
	if out := os.Getenv(npEnvLatencyOut); out != "" {
		if err := os.WriteFile(out, []byte(rep.Markdown()+"\n"+s.rec.Detail()), 0o644); err != nil {
			t.Errorf("write %s: %v", out, err)
		}
	}
}

// run runs one case and then restores the suite's state: no policies,
// default labels, no extra pods or namespaces, every pod reaching every
// other.
func (s *netpolSuite) run(t *testing.T, tc netpolCase) {
	c := &npCtx{T: t, s: s, name: tc.name, pods: slices.Clone(s.base), priors: map[npKey]npPrior{}}
	t.Cleanup(c.restore)
	tc.run(c)
}

// npKey is a port and protocol of the matrix.
type npKey struct {
	port  int
	proto string
}

// explain shows why a wrong pair got its verdict: OVS's trace of it and the
// flows of the nodes involved.
func (c *npCtx) explain(pods []probe.Pod, pair netpol.Pair, port int, proto string) string {
	byKey := map[string]probe.Pod{}
	for _, p := range pods {
		byKey[p.Key()] = p
	}
	from, to := byKey[pair.From], byKey[pair.To]
	var b strings.Builder
	tr := c.s.prober.Tracer
	if out, err := tr.Explain(c.ctx(), from, to, port, proto); err != nil {
		fmt.Fprintf(&b, "\nno trace of %s: %v\n", pair, err)
	} else {
		fmt.Fprintf(&b, "\nwhy %s (%s/%d), as OVS sees a new connection:\n%s\n", pair, proto, port, out)
	}
	for _, node := range slices.Compact([]string{from.Node, to.Node}) {
		if dp, err := tr.Datapath(node, from.IP, to.IP); err != nil {
			fmt.Fprintf(&b, "datapath of %s: %v\n", node, err)
		} else {
			fmt.Fprintf(&b, "datapath of %s:\n%s", node, dp)
		}
		if w, err := tr.Warnings(node); err != nil {
			fmt.Fprintf(&b, "ovs-vswitchd log of %s: %v\n", node, err)
		} else if w != "" {
			fmt.Fprintf(&b, "warnings in the ovs-vswitchd log of %s:\n%s\n", node, w)
		}
		if flows, err := tr.Flows(node); err != nil {
			fmt.Fprintf(&b, "flows of %s: %v\n", node, err)
		} else {
			fmt.Fprintf(&b, "flows of %s:\n%s\n", node, flows)
		}
	}
	return b.String()
}

// npPrior is the last validated matrix of a npKey and the change
// generation it was validated at.
type npPrior struct {
	table *netpol.Table
	gen   int
}

// npCtx is one case's view of the suite. It records every change it makes
// through the API so that the first validation after a change can measure
// the change's realization.
type npCtx struct {
	*testing.T
	s    *netpolSuite
	name string
	// pods is the current model ("namespace/name").
	pods []string
	// gen counts changes; priors are validated matrices by npKey.
	gen    int
	priors map[npKey]npPrior
	// lastChange and lastKind describe the last change; measured is set
	// once a validation followed it.
	lastChange time.Time
	lastKind   string
	measured   bool
	// extras are what the case created beyond the model, removed by
	// restore.
	extraPods       []string
	extraNamespaces []string
}

func (c *npCtx) ctx() context.Context { return c.s.ctx }

// reach returns an all-allowed expectation over the current model.
func (c *npCtx) reach() *netpol.Reachability {
	c.Helper()
	r, err := netpol.NewReachability(c.pods, true)
	if err != nil {
		c.Fatal(err)
	}
	return r
}

// change makes one API change and records when it started.
func (c *npCtx) change(kind, what string, fn func(ctx context.Context) error) {
	c.Helper()
	start := time.Now()
	if err := fn(c.ctx()); err != nil {
		c.Fatalf("%s: %v", what, err)
	}
	c.gen++
	c.lastChange, c.lastKind, c.measured = start, kind, false
	c.Logf("%s (%s; API call %s)", what, kind, time.Since(start).Round(100*time.Microsecond))
}

// create creates a NetworkPolicy.
func (c *npCtx) create(p *networkingv1.NetworkPolicy) {
	c.Helper()
	c.change("create", "create NetworkPolicy "+p.Namespace+"/"+p.Name+"\n"+npPolicyText(p), func(ctx context.Context) error {
		_, err := c.s.kube.NetworkingV1().NetworkPolicies(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		return err
	})
}

// update replaces the spec of an existing NetworkPolicy.
func (c *npCtx) update(p *networkingv1.NetworkPolicy) {
	c.Helper()
	api := c.s.kube.NetworkingV1().NetworkPolicies(p.Namespace)
	cur, err := api.Get(c.ctx(), p.Name, metav1.GetOptions{})
	if err != nil {
		c.Fatal(err)
	}
	cur.Spec = p.Spec
	c.change("update", "update NetworkPolicy "+p.Namespace+"/"+p.Name+"\n"+npPolicyText(cur), func(ctx context.Context) error {
		_, err := api.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// deletePolicy deletes a NetworkPolicy.
func (c *npCtx) deletePolicy(ns, name string) {
	c.Helper()
	c.change("delete", "delete NetworkPolicy "+ns+"/"+name, func(ctx context.Context) error {
		return c.s.kube.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// npLabelsPatch is a merge patch of metadata.labels (nil values remove).
func npLabelsPatch(labels map[string]*string) []byte {
	data, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	return data
}

func npStrPtrs(labels map[string]string) map[string]*string {
	out := make(map[string]*string, len(labels))
	for k, v := range labels {
		out[k] = &v
	}
	return out
}

// labelNamespace adds labels to a namespace.
func (c *npCtx) labelNamespace(ns string, labels map[string]string) {
	c.Helper()
	c.change("label", fmt.Sprintf("label namespace %s %v", ns, labels), func(ctx context.Context) error {
		_, err := c.s.kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, npLabelsPatch(npStrPtrs(labels)), metav1.PatchOptions{})
		return err
	})
}

// labelPod adds labels to a pod.
func (c *npCtx) labelPod(key string, labels map[string]string) {
	c.Helper()
	ns, name, _ := strings.Cut(key, "/")
	c.change("label", fmt.Sprintf("label pod %s %v", key, labels), func(ctx context.Context) error {
		_, err := c.s.kube.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, npLabelsPatch(npStrPtrs(labels)), metav1.PatchOptions{})
		return err
	})
}

// createNamespace creates a namespace for this case only.
func (c *npCtx) createNamespace(name string, labels map[string]string) {
	c.Helper()
	c.extraNamespaces = append(c.extraNamespaces, name)
	c.change("namespace", fmt.Sprintf("create namespace %s %v", name, labels), func(ctx context.Context) error {
		_, err := c.s.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
		return err
	})
}

// addPod creates a pod for this case only, adds it to the model and waits
// until it runs.
func (c *npCtx) addPod(ns, name string, labels map[string]string, ports []corev1.ContainerPort) {
	c.Helper()
	key := ns + "/" + name
	c.startPod(ns, name, labels, ports)
	c.s.waitPods(c.T, []string{key})
	c.Logf("pod %s runs", key)
}

// startPod creates a pod for this case only and adds it to the model
// without waiting.
func (c *npCtx) startPod(ns, name string, labels map[string]string, ports []corev1.ContainerPort) {
	c.Helper()
	key := ns + "/" + name
	c.extraPods = append(c.extraPods, key)
	c.change("pod", "create pod "+key, func(context.Context) error {
		c.s.createPod(c.T, ns, name, labels, ports)
		return nil
	})
	c.pods = append(c.pods, key)
}

// labPod returns the lab's record of a pod.
func (c *npCtx) labPod(key string) probe.Pod {
	c.Helper()
	pods, err := c.s.lab.Pods()
	if err != nil {
		c.Fatal(err)
	}
	for _, p := range pods {
		if p.Key() == key && p.IP != "" {
			return p
		}
	}
	c.Fatalf("pod %s has no address in the lab", key)
	return probe.Pod{}
}

// validate checks the matrix of port/proto against r. The first validation
// after a change whose previous matrix is known measures the change's
// realization on the pairs it flips; a matrix not validated since the last
// change is first given time to settle. Then every pair is probed, wrong
// pairs once more; any pair still wrong fails the case with the expected,
// observed and difference matrices.
func (c *npCtx) validate(port int, proto string, r *netpol.Reachability) {
	c.Helper()
	if err := r.Err(); err != nil {
		c.Fatal(err)
	}
	exp := r.Expected
	pods, err := c.s.lab.Pods()
	if err != nil {
		c.Fatal(err)
	}
	key := npKey{port, proto}
	p := c.prior(key)
	if !c.measured && p.gen == c.gen-1 && p.table.SamePods(exp) && proto != netpol.SCTP {
		c.measure(pods, key, p.table, exp)
	}
	c.measured = true
	if p.gen != c.gen {
		if ok, err := c.s.prober.Settle(c.ctx(), pods, port, proto, exp, npSettleLimit); err != nil {
			c.Fatal(err)
		} else if !ok {
			c.Logf("%s/%d did not settle within %s", proto, port, npSettleLimit)
		}
	}
	if proto == netpol.SCTP {
		c.Logf("SCTP/%d: verdicts read with ovs-appctl ofproto/trace on the nodes the packet crosses (this kernel has no SCTP, so no SCTP packet is sent)", port)
	}
	res, err := c.s.prober.Check(c.ctx(), pods, port, proto, exp)
	if err != nil {
		c.Fatal(err)
	}
	if wrong := res.Wrong(); len(wrong) > 0 {
		c.Fatalf("reachability %s/%d is wrong:\n%s%s", proto, port, res, c.explain(pods, wrong[0], port, proto))
	}
	c.Logf("reachability %s/%d as expected (by %s):\n%s", proto, port, res.Method, res.Observed.Render(fmt.Sprintf("%s/%d", proto, port)))
	c.priors[key] = npPrior{exp.Clone(), c.gen}
}

// prior is the last validated matrix of key; before any validation in the
// case it is the state every case starts from: no policy, every model pod
// reaching every other on every port and protocol.
func (c *npCtx) prior(key npKey) npPrior {
	c.Helper()
	if p, ok := c.priors[key]; ok {
		return p
	}
	t, err := netpol.NewTable(c.s.base, true)
	if err != nil {
		c.Fatal(err)
	}
	return npPrior{table: t, gen: 0}
}

// measure records the realization of the last change on the pairs it
// flipped from before to after.
func (c *npCtx) measure(pods []probe.Pod, key npKey, before, after *netpol.Table) {
	c.Helper()
	flipped, err := before.Differences(after)
	if err != nil {
		c.Fatal(err)
	}
	if len(flipped) == 0 {
		return
	}
	changes := make([]netpol.Change, len(flipped))
	for i, pair := range flipped {
		allowed, _ := after.Get(pair.From, pair.To)
		changes[i] = netpol.Change{Pair: pair, Allowed: allowed}
	}
	real, err := c.s.prober.Realize(c.ctx(), pods, key.port, key.proto, changes, c.lastChange, npSettleLimit)
	if err != nil {
		c.Fatal(err)
	}
	sample := netpol.ChangeSample{Case: c.name, Kind: c.lastKind, Port: key.port, Protocol: key.proto, Changed: len(flipped), Pairs: real}
	c.s.rec.Add(sample)
	var parts []string
	for _, r := range real {
		state := "not realized within " + npSettleLimit.String()
		if r.Realized {
			state = r.Latency.Round(100 * time.Microsecond).String()
			if r.AtFirstProbe {
				state += " (at the first probe)"
			}
		}
		parts = append(parts, fmt.Sprintf("%s %s", r.Pair, state))
	}
	if m, ok := sample.Max(); ok {
		c.Logf("realized in %s (%d pairs flipped, %d measured: %s)", m.Round(100*time.Microsecond), len(flipped), len(real), strings.Join(parts, ", "))
	} else {
		c.Logf("NOT realized within %s (%d pairs flipped, %d measured: %s)", npSettleLimit, len(flipped), len(real), strings.Join(parts, ", "))
	}
}

// restore removes what the case created and changed, and waits until every
// model pod reaches every other again.
func (c *npCtx) restore() {
	ctx := c.ctx()
	kube := c.s.kube
	for _, key := range c.extraPods {
		ns, name, _ := strings.Cut(key, "/")
		err := kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if err != nil && !apierrors.IsNotFound(err) {
			c.Errorf("restore: delete pod %s: %v", key, err)
		}
	}
	for _, ns := range c.extraNamespaces {
		if err := kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			c.Errorf("restore: delete namespace %s: %v", ns, err)
		}
	}
	policies, err := kube.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		c.Errorf("restore: list policies: %v", err)
		return
	}
	for _, p := range policies.Items {
		if err := kube.NetworkingV1().NetworkPolicies(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			c.Errorf("restore: delete policy %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	for _, ns := range npNamespaces {
		n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			c.Errorf("restore: %v", err)
			continue
		}
		if extra := npLabelFix(n.Labels, map[string]string{npNamespaceLabel: ns}); len(extra) > 0 {
			if _, err := kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, npLabelsPatch(extra), metav1.PatchOptions{}); err != nil {
				c.Errorf("restore: labels of namespace %s: %v", ns, err)
			}
		}
	}
	for _, key := range c.s.base {
		ns, name, _ := strings.Cut(key, "/")
		p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			c.Errorf("restore: %v", err)
			continue
		}
		if extra := npLabelFix(p.Labels, map[string]string{"pod": name}); len(extra) > 0 {
			if _, err := kube.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, npLabelsPatch(extra), metav1.PatchOptions{}); err != nil {
				c.Errorf("restore: labels of pod %s: %v", key, err)
			}
		}
	}
	c.waitGone()
	c.pods = slices.Clone(c.s.base)
	r := c.reach()
	pods, err := c.s.lab.Pods()
	if err != nil {
		c.Errorf("restore: %v", err)
		return
	}
	if _, err := c.s.prober.Settle(ctx, pods, 80, netpol.TCP, r.Expected, npSettleLimit); err != nil {
		c.Errorf("restore: %v", err)
		return
	}
	res, err := c.s.prober.Check(ctx, pods, 80, netpol.TCP, r.Expected)
	if err == nil && len(res.Wrong()) > 0 {
		// Settle saw every pair allowed, so this is a connection lost in
		// flight, not a policy left behind: cross-node packets are
		// occasionally lost right after a policy change (test/e2e/README.md,
		// "Known issues"). Say so, settle again, and fail if it persists.
		c.Logf("restore: %d pair(s) lost a connection right after settling (known issue: transient loss after a policy change); settling again:\n%s", len(res.Wrong()), res)
		if _, err := c.s.prober.Settle(ctx, pods, 80, netpol.TCP, r.Expected, npSettleLimit); err != nil {
			c.Errorf("restore: %v", err)
			return
		}
		res, err = c.s.prober.Check(ctx, pods, 80, netpol.TCP, r.Expected)
	}
	if err != nil {
		c.Errorf("restore: %v", err)
	} else if wrong := res.Wrong(); len(wrong) > 0 {
		c.Errorf("restore: with every policy deleted, reachability is still wrong:\n%s%s", res, c.explain(pods, wrong[0], 80, netpol.TCP))
	}
}

// npLabelFix returns a patch that removes every label not in want and sets
// those of want.
func npLabelFix(have, want map[string]string) map[string]*string {
	patch := map[string]*string{}
	for k := range have {
		if _, ok := want[k]; !ok {
			patch[k] = nil
		}
	}
	for k, v := range want {
		if have[k] != v {
			patch[k] = &v
		}
	}
	return patch
}

// waitGone waits until the case's extra pods left the lab and its extra
// namespaces are deleted.
func (c *npCtx) waitGone() {
	if len(c.extraPods) == 0 && len(c.extraNamespaces) == 0 {
		return
	}
	deadline := time.Now().Add(npPodReadyLimit)
	for {
		var left []string
		pods, _ := c.s.lab.Pods()
		for _, p := range pods {
			if slices.Contains(c.extraPods, p.Key()) || slices.Contains(c.extraNamespaces, p.Namespace) {
				left = append(left, "pod "+p.Key())
			}
		}
		for _, ns := range c.extraNamespaces {
			if _, err := c.s.kube.CoreV1().Namespaces().Get(c.ctx(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, "namespace "+ns)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.Errorf("restore: still there after %s: %s", npPodReadyLimit, strings.Join(left, ", "))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// npPolicyText renders a policy's spec for the log.
func npPolicyText(p *networkingv1.NetworkPolicy) string {
	data, err := json.Marshal(p.Spec)
	if err != nil {
		return err.Error()
	}
	return "  spec: " + string(data)
}

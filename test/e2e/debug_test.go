//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"palisade.dev/palisade/agent/debug"
	"palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/probe"
)

const debugNS = "dbg"

// palisadectl runs bin/palisadectl inside node 1's network namespace, as
// an operator on the node would, and returns its stdout.
func palisadectl(ctx context.Context, args ...string) (string, error) {
	binDir := lab.DefaultBinDir()
	if !filepath.IsAbs(binDir) {
		binDir = filepath.Join("..", "..", binDir)
	}
	bin, err := filepath.Abs(filepath.Join(binDir, "palisadectl"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", layout.NodeNetns(1), bin}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("palisadectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func policyFlows(t *testing.T, ctx context.Context, args ...string) debug.PolicyFlows {
	t.Helper()
	out, err := palisadectl(ctx, append([]string{"get", "flows", "-o", "json"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var pf debug.PolicyFlows
	if err := json.Unmarshal([]byte(out), &pf); err != nil {
		t.Fatalf("decoding get flows -o json: %v\n%s", err, out)
	}
	return pf
}

func tracePods(t *testing.T, ctx context.Context, from, to string) debug.TraceResult {
	t.Helper()
	out, err := palisadectl(ctx, "trace", "--from", from, "--to", to, "--protocol", "TCP", "--port", "80", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res debug.TraceResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("decoding trace -o json: %v\n%s", err, out)
	}
	return res
}

func debugPod(t *testing.T, pods []probe.Pod, name string) probe.Pod {
	t.Helper()
	for _, p := range pods {
		if p.Namespace == debugNS && p.Name == name {
			return p
		}
	}
	t.Fatalf("pod %s/%s not found in %v", debugNS, name, pods)
	return probe.Pod{}
}

// TestDebug runs palisadectl on a node: the flows of a policy (by cookie,
// with counters that follow real traffic) and traces of an allowed and a
// denied connection through the node's real OVS.
func TestDebug(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 1)
	kube := l.Client()
	createPods(t, ctx, kube, debugNS, "a", "b", "c")
	pods, err := l.Pods()
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := debugPod(t, pods, "a"), debugPod(t, pods, "b"), debugPod(t, pods, "c")
	bIP := netip.MustParseAddr(b.IP)

	if _, err := kube.NetworkingV1().NetworkPolicies(debugNS).Create(ctx, bFromAPolicy(debugNS, 80), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reachable := func(from probe.Pod) bool {
		_, err := dialFrom(ctx, from.Netns, netip.Addr{}, probe.TCP, bIP, 80, 500*time.Millisecond)
		return err == nil
	}
	for deadline := time.Now().Add(30 * time.Second); !reachable(a) || reachable(c); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the policy did not take effect within 30s")
		}
	}

	// The policy's flows, as OVS holds them.
	pf := policyFlows(t, ctx, "--policy", "dbg/b-from-a")
	if len(pf.Targets) != 1 || pf.Targets[0] != "dbg/b" {
		t.Errorf("targets %v, want [dbg/b]", pf.Targets)
	}
	var ruleFlow *debug.Flow
	kinds := map[string]int{}
	for i, f := range pf.Flows {
		kinds[f.Kind]++
		if f.Kind == "rule" {
			ruleFlow = &pf.Flows[i]
		}
	}
	if want := map[string]int{"conjunction": 3, "rule": 1, "metric": 2, "isolation": 1}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("kinds of flows %v, want %v:\n%+v", kinds, want, pf.Flows)
	}
	conj := uint32(ruleFlow.Cookie & openflow.CookieIDMask)
	if ruleFlow.TableName != "IngressRule" || ruleFlow.Match != fmt.Sprintf("ip,conj_id=%d", conj) {
		t.Errorf("rule flow %+v: want table IngressRule matching conj_id=%d (its cookie's id)", ruleFlow, conj)
	}
	for _, f := range pf.Flows {
		wantTable := map[string]string{"conjunction": "IngressRule", "rule": "IngressRule", "metric": "IngressMetric", "isolation": "IngressDefault"}[f.Kind]
		if f.TableName != wantTable || f.Direction != "Ingress" {
			t.Errorf("%s flow in table %s (%s), want %s (Ingress)", f.Kind, f.TableName, f.Direction, wantTable)
		}
		cat := f.Cookie & openflow.CookieCategoryMask
		switch f.Kind {
		case "conjunction":
			if cat != openflow.CookiePolicy || uint32(f.Cookie&openflow.CookieIDMask) != conj ||
				!strings.Contains(f.Actions, fmt.Sprintf("conjunction(%d,", conj)) {
				t.Errorf("conjunction flow %+v: want cookie id and conjunction() of %d", f, conj)
			}
		case "metric":
			if _, id, ok := openflow.ParseMetricCookie(f.Cookie &^ openflow.CookieRoundMask); !ok || id != conj {
				t.Errorf("metric flow %+v: cookie is not a metric of conjunction %d", f, conj)
			}
		case "isolation":
			if cat != openflow.CookieIsolate || f.Match != "ip,reg1=0x"+fmt.Sprintf("%x", f.Cookie&openflow.CookieIDMask) {
				t.Errorf("isolation flow %+v: want an isolate cookie of b's port, matching it", f)
			}
		}
	}

	// Counters follow real traffic: each new connection's first packet
	// matches the rule's conjunction.
	before := ruleFlow.Packets
	const conns = 3
	for range conns {
		if _, err := dialFrom(ctx, a.Netns, netip.Addr{}, probe.TCP, bIP, 80, 2*time.Second); err != nil {
			t.Fatalf("a -> b:80: %v", err)
		}
	}
	var after uint64
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		for _, f := range policyFlows(t, ctx, "--policy", "dbg/b-from-a", "--direction", "Ingress", "--rule", "0").Flows {
			if f.Kind == "rule" {
				after = f.Packets
			}
		}
		if after >= before+conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rule flow counted %d packets after %d new connections, %d before", after, conns, before)
		}
	}
	t.Logf("rule flow packets: %d before, %d after %d connections", before, after, conns)

	// Unknown policies are an error, and every policy is listed.
	if _, err := palisadectl(ctx, "get", "flows", "--policy", "dbg/nope"); err == nil || !strings.Contains(err.Error(), "policy dbg/nope is not realized on this node") {
		t.Errorf("get flows of an unknown policy: %v", err)
	}
	list, err := palisadectl(ctx, "get", "flows")
	if err != nil || !strings.Contains(list, "dbg/b-from-a") || !strings.Contains(list, "dbg/b") {
		t.Errorf("get flows: %v\n%s", err, list)
	}

	// Traces.
	allowed := tracePods(t, ctx, "dbg/a", "dbg/b")
	if v := allowed.Verdict; v.Action != "output" || v.PortName != "pod dbg/b" || v.TableName != "Output" {
		t.Errorf("a -> b verdict %+v, want output to pod dbg/b in Output", v)
	}
	found := false
	for _, s := range allowed.Steps {
		if s.TableName == "IngressRule" && s.Rule != nil && s.Rule.Policy == "dbg/b-from-a" && s.Rule.Via == "conj_id" && s.Rule.Index == 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("a -> b: no IngressRule step of dbg/b-from-a's rule 0 through its conj_id:\n%+v", allowed.Steps)
	}
	denied := tracePods(t, ctx, "dbg/c", "dbg/b")
	if v := denied.Verdict; v.Action != "drop" || v.TableName != "IngressDefault" || !strings.Contains(v.Reason, "dbg/b-from-a") {
		t.Errorf("c -> b verdict %+v, want a drop in IngressDefault by dbg/b-from-a's isolation", v)
	}
	if len(denied.Steps) == 0 {
		t.Errorf("c -> b: the trace has no steps, want the last one to be dbg/b-from-a's isolation: %+v", denied)
	} else if last := denied.Steps[len(denied.Steps)-1]; last.Rule == nil || last.Rule.Policy != "dbg/b-from-a" || last.Rule.Via != "isolation" {
		t.Errorf("c -> b: last step %+v, want dbg/b-from-a's isolation", last)
	}
	// The table output, as an operator reads it.
	text, err := palisadectl(ctx, "trace", "--from", "dbg/c", "--to", b.IP, "--protocol", "TCP", "--port", "80")
	if err != nil || !strings.Contains(text, "Verdict: drop in table IngressDefault") {
		t.Errorf("trace c -> %s: %v\n%s", b.IP, err, text)
	}
	flowsText, err := palisadectl(ctx, "get", "flows", "--policy", "dbg/b-from-a", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("palisadectl get flows --policy dbg/b-from-a -o wide:\n%s", flowsText)
	t.Logf("palisadectl trace --from dbg/c --to %s --protocol TCP --port 80:\n%s", b.IP, text)
	allowedText, err := palisadectl(ctx, "trace", "--from", "dbg/a", "--to", "dbg/b", "--protocol", "TCP", "--port", "80")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("palisadectl trace --from dbg/a --to dbg/b --protocol TCP --port 80:\n%s", allowedText)
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"palisade.dev/palisade/agent/debug"
)

var testTrace = debug.TraceResult{From: "dbg/c", To: "dbg/b", Protocol: "TCP", Port: 80,
	Packet: "tcp,in_port=5,dl_src=02:00:00:00:00:05,dl_dst=02:00:00:00:00:04,nw_src=198.19.0.4,nw_dst=198.19.0.3,nw_ttl=64,tcp_src=40000,tcp_dst=80",
	Trace: debug.Trace{
		Steps: []debug.Step{
			{Pass: 0, Table: 0, TableName: "Classifier", Match: "in_port=5", Priority: 200, Cookie: 0x102000000000005,
				Actions: []string{"set_field:0x1/0xf->reg0", "goto_table:1"}},
			{Pass: 1, Table: 9, TableName: "IngressRule", Priority: 0, Cookie: 0x101000000000000, Actions: []string{"goto_table:10"}},
			{Pass: 1, Table: 10, TableName: "IngressDefault", Match: "ip,reg1=0x4", Priority: 200, Cookie: 0x104000000000004,
				Actions: []string{"drop"}, Rule: &debug.StepRule{Policy: "dbg/b-from-a", Direction: "Ingress", Index: -1, Via: "isolation"}},
		},
		Verdict: debug.Verdict{Action: "drop", Table: 10, TableName: "IngressDefault",
			Reason: "Ingress isolation: no ingress rule of dbg/b-from-a allows it"},
	},
}

// noKubeconfig makes the test run without any kubeconfig.
func noKubeconfig(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	home := homeKubeconfig
	homeKubeconfig = filepath.Join(t.TempDir(), "none")
	t.Cleanup(func() { homeKubeconfig = home })
}

func TestTraceOutput(t *testing.T) {
	noKubeconfig(t)
	addr, queries := fakeAgent(t, map[string]any{debug.TracePath: testTrace})
	var out, errb bytes.Buffer
	args := []string{"trace", "--from", "dbg/c", "--to", "dbg/b", "--port", "80", "--protocol", "tcp", "--agent-address", addr, "--kubeconfig", ""}
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := `Trace dbg/c -> dbg/b TCP:80
Packet: tcp,in_port=5,dl_src=02:00:00:00:00:05,dl_dst=02:00:00:00:00:04,nw_src=198.19.0.4,nw_dst=198.19.0.3,nw_ttl=64,tcp_src=40000,tcp_dst=80

PASS  TABLE           PRIORITY  MATCH        ACTIONS                               RULE
0     Classifier      200       in_port=5    set_field:0x1/0xf->reg0,goto_table:1  
1     IngressRule     0         *            goto_table:10                         
1     IngressDefault  200       ip,reg1=0x4  drop                                  Ingress isolation (dbg/b-from-a)

Verdict: drop in table IngressDefault: Ingress isolation: no ingress rule of dbg/b-from-a allows it
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if got, want := (*queries)[0], "/debug/trace?from=dbg%2Fc&port=80&protocol=TCP&to=dbg%2Fb"; got != want {
		t.Errorf("asked the agent for %s, want %s", got, want)
	}
}

func TestTraceVerdictText(t *testing.T) {
	for _, tc := range []struct {
		v    debug.Verdict
		want string
	}{
		{debug.Verdict{Action: "output", Port: 4, PortName: "pod dbg/b", TableName: "Output"}, "output to port 4 (pod dbg/b) in table Output"},
		{debug.Verdict{Action: "output", Port: 9, TableName: "Output"}, "output to port 9 in table Output"},
		{debug.Verdict{Action: "output", Port: 2, PortName: "tunnel", TableName: "Output", Note: "OVS: trace artifact"}, "output to port 2 (tunnel) in table Output (OVS: trace artifact)"},
		{debug.Verdict{Action: "drop", TableName: "SpoofGuard", Reason: "the matched flow drops"}, "drop in table SpoofGuard: the matched flow drops"},
	} {
		if got := verdictText(tc.v); got != tc.want {
			t.Errorf("verdictText(%+v) = %q, want %q", tc.v, got, tc.want)
		}
	}
	if got, want := stepRule(&debug.StepRule{Policy: "dbg/p", Direction: "Egress", Index: 2, Via: "conj_id"}), "dbg/p Egress/2 (conj_id)"; got != want {
		t.Errorf("stepRule = %q, want %q", got, want)
	}
}

func TestTraceErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"trace", "--from", "dbg/a"}, "--from and --to are required"},
		{[]string{"trace", "--from", "dbg/a", "--to", "nope", "--kubeconfig", "/nonexistent"}, `--to "nope": want NAMESPACE/POD`},
		{[]string{"trace", "--from", "dbg/a", "--to", "dbg/b", "--kubeconfig", "/nonexistent/kubeconfig"}, "loading the kubeconfig: stat /nonexistent/kubeconfig"},
		{[]string{"trace", "--from", "dbg/a", "--to", "198.19.0.3", "-o", "xml", "--agent-address", "127.0.0.1:1"}, `unknown output format "xml"`},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d, stderr %q, want an error saying %q", tc.args, code, errb.String(), tc.err)
		}
	}
}

// TestTraceKubeconfigList looks the destination pod up with a $KUBECONFIG
// that lists several files, merged as kubectl does: the first names a
// context in the second.
func TestTraceKubeconfigList(t *testing.T) {
	noKubeconfig(t)
	kubeconfig, requests := fakeAPIServer(t, map[string]any{
		"/api/v1/namespaces/dbg/pods/b": &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "dbg", Name: "b"}, Status: corev1.PodStatus{PodIP: "198.19.1.3"}},
	})
	first := filepath.Join(t.TempDir(), "first")
	if err := os.WriteFile(first, []byte("apiVersion: v1\nkind: Config\npreferences: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", first+string(filepath.ListSeparator)+kubeconfig)
	addr, queries := fakeAgent(t, map[string]any{debug.TracePath: testTrace})
	var out, errb bytes.Buffer
	if code := run([]string{"trace", "--from", "dbg/c", "--to", "dbg/b", "--port", "80", "--agent-address", addr}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if len(*requests) != 1 || len(*queries) != 1 || !strings.Contains((*queries)[0], "to=198.19.1.3") {
		t.Errorf("API requests %q, agent queries %q: want the pod looked up and its IP traced", *requests, *queries)
	}
	if !strings.Contains(out.String(), "dbg/b (198.19.1.3)") {
		t.Errorf("output lacks the resolved destination:\n%s", out.String())
	}
}

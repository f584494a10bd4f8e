package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/agent/debug"
)

// fakeAgent serves canned debug API replies and records the queries.
func fakeAgent(t *testing.T, replies map[string]any) (addr string, queries *[]string) {
	t.Helper()
	var qs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		qs = append(qs, r.URL.Path+"?"+r.URL.RawQuery)
		if r.URL.Query().Get("policy") == "dbg/nope" {
			http.Error(w, "policy dbg/nope is not realized on this node", http.StatusNotFound)
			return
		}
		v, ok := replies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &qs
}

var testPolicyFlows = debug.PolicyFlows{Policy: "dbg/b-from-a", Targets: []string{"dbg/b"}, Flows: []debug.Flow{
	{Table: 9, TableName: "IngressRule", Priority: 200, Cookie: 0x103000000000001, Match: "ip,conj_id=1",
		Actions: "load:0x1->NXM_NX_REG3[0..31],goto_table:IngressMetric", Packets: 3, Bytes: 222, Kind: "rule", Direction: "Ingress"},
	{Table: 9, TableName: "IngressRule", Priority: 200, Cookie: 0x103000000000001, Match: "tcp,tp_dst=80",
		Actions: "conjunction(1,3/3),conjunction(2,3/3)", Packets: 5, Bytes: 370, Kind: "conjunction", Direction: "Ingress",
		SharedWith: []string{"dbg/b-web/Ingress/0"}},
	{Table: 10, TableName: "IngressDefault", Priority: 200, Cookie: 0x104000000000004, Match: "ip,reg1=0x4",
		Actions: "drop", Packets: 2, Bytes: 148, Kind: "isolation", Direction: "Ingress", Rule: -1},
}}

func TestGetFlows(t *testing.T) {
	addr, queries := fakeAgent(t, map[string]any{debug.FlowsPath: testPolicyFlows})
	for _, tc := range []struct {
		args  []string
		want  string
		query string
	}{
		{
			args:  []string{"get", "flows", "--policy", "dbg/b-from-a"},
			query: "/debug/flows?policy=dbg%2Fb-from-a",
			want: `TABLE           KIND         RULE       PRIORITY  MATCH          ACTIONS                                                PACKETS
IngressRule     rule         Ingress/0  200       ip,conj_id=1   load:0x1->NXM_NX_REG3[0..31],goto_table:IngressMetric  3
IngressRule     conjunction  Ingress/0  200       tcp,tp_dst=80  conjunction(1,3/3),conjunction(2,3/3)                  5
IngressDefault  isolation    Ingress/-  200       ip,reg1=0x4    drop                                                   2
`,
		},
		{
			args:  []string{"get", "flows", "--policy", "dbg/b-from-a", "--direction", "Ingress", "--rule", "0", "-o", "wide"},
			query: "/debug/flows?direction=Ingress&policy=dbg%2Fb-from-a&rule=0",
			want: `TABLE           KIND         RULE       PRIORITY  MATCH          ACTIONS                                                PACKETS  BYTES  COOKIE             SHARED-WITH
IngressRule     rule         Ingress/0  200       ip,conj_id=1   load:0x1->NXM_NX_REG3[0..31],goto_table:IngressMetric  3        222    0x103000000000001  
IngressRule     conjunction  Ingress/0  200       tcp,tp_dst=80  conjunction(1,3/3),conjunction(2,3/3)                  5        370    0x103000000000001  dbg/b-web/Ingress/0
IngressDefault  isolation    Ingress/-  200       ip,reg1=0x4    drop                                                   2        148    0x104000000000004  
`,
		},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(append(tc.args, "--agent-address", addr), &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if got := (*queries)[len(*queries)-1]; got != tc.query {
				t.Errorf("asked the agent for %s, want %s", got, tc.query)
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run([]string{"get", "flows", "--policy", "dbg/b-from-a", "-o", "json", "--agent-address", addr}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var back debug.PolicyFlows
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testPolicyFlows, back); diff != "" {
		t.Errorf("-o json does not round-trip (-want +got):\n%s", diff)
	}
}

func TestGetFlowsSummary(t *testing.T) {
	addr, _ := fakeAgent(t, map[string]any{debug.FlowsPath: []debug.PolicySummary{
		{Policy: "dbg/b-from-a", Targets: []string{"dbg/b"}, Rules: 1, Flows: 7, Shared: 4},
		{Policy: "dbg/c-out", Targets: []string{"dbg/c", "dbg/d"}, Rules: 2, Flows: 6},
	}})
	var out, errb bytes.Buffer
	if code := run([]string{"get", "flows", "--agent-address", addr}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := `POLICY        RULES  FLOWS  SHARED  TARGETS
dbg/b-from-a  1      7      4       dbg/b
dbg/c-out     2      6      0       dbg/c,dbg/d
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestGetFlowsErrors(t *testing.T) {
	addr, queries := fakeAgent(t, nil)
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"get"}, "which resource? one of:"},
		{[]string{"get", "pods"}, `unknown resource "pods"`},
		{[]string{"get", "flows", "--rule", "1"}, "--direction and --rule need --policy"},
		{[]string{"get", "flows", "--policy", "x/p", "--rule", "1"}, "--rule needs --direction"},
		{[]string{"get", "flows", "--policy", "dbg/nope", "--agent-address", addr}, "404 Not Found: policy dbg/nope is not realized on this node"},
		{[]string{"get", "flows", "--agent-address", "127.0.0.1:1"}, "reaching the agent at 127.0.0.1:1"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), tc.err) {
			t.Errorf("%v: exit %d, stderr %q, want an error saying %q", tc.args, code, errb.String(), tc.err)
		}
	}
	// An unknown -o is refused before the agent is asked.
	*queries = nil
	var out, errb bytes.Buffer
	if code := run([]string{"get", "flows", "-o", "xml", "--agent-address", addr}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), `unknown output format "xml"`) || len(*queries) != 0 {
		t.Errorf("get flows -o xml: exit %d, stderr %q, %d agent requests; want the format refused first", code, errb.String(), len(*queries))
	}
}

package debug

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// pipelineNames are the agent's table names (agent/openflow.Pipeline).
var pipelineNames = map[uint8]string{0: "Classifier", 1: "SpoofGuard", 2: "L3Forwarding", 3: "Conntrack",
	4: "ConntrackState", 5: "EgressRule", 6: "EgressDefault", 7: "EgressMetric", 8: "L2Forwarding",
	9: "IngressRule", 10: "IngressDefault", 11: "IngressMetric", 12: "ConntrackCommit", 13: "Output"}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The testdata traces were captured from a lab node (OVS 3.1): pods a
// (port 3, 198.19.0.2), b (port 4, 198.19.0.3), c (port 5, 198.19.0.4)
// on node1, r (198.19.1.2) on node2, and policy dbg/b-from-a allowing
// TCP 80 from a to b (conjunction 1).
func TestParseTrace(t *testing.T) {
	for _, tc := range []struct {
		file string
		// tables are the steps' table names, in order.
		tables  []string
		passes  int
		verdict Verdict
		dpActs  string
	}{
		{
			file: "trace-allowed.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressDefault", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressMetric", "ConntrackCommit", "Output"},
			passes:  1,
			verdict: Verdict{Action: "output", Port: 4, Table: 13, TableName: "Output"},
			dpActs:  "ct(commit,zone=65520,label=0x100000000/0xffffffffffffffff),7",
		},
		{
			file: "trace-denied.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressDefault", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressDefault"},
			passes:  1,
			verdict: Verdict{Action: "drop", Table: 10, TableName: "IngressDefault", Reason: "the matched flow drops"},
			dpActs:  "drop",
		},
		{
			file: "trace-est.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressMetric", "ConntrackCommit", "Output"},
			passes:  1,
			verdict: Verdict{Action: "output", Port: 4, Table: 13, TableName: "Output"},
		},
		{
			file: "trace-remote.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressDefault", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressDefault", "IngressMetric", "ConntrackCommit", "Output"},
			passes:  1,
			verdict: Verdict{Action: "output", Port: 2, Table: 13, TableName: "Output"},
			dpActs:  "ct(commit,zone=65520,label=0/0xffffffffffffffff)",
		},
		{
			file:    "trace-spoof.txt",
			tables:  []string{"Classifier", "SpoofGuard"},
			verdict: Verdict{Action: "drop", Table: 1, TableName: "SpoofGuard", Reason: "the matched flow drops"},
			dpActs:  "drop",
		},
		{
			file: "trace-icmp-denied.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressDefault", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressDefault"},
			passes:  1,
			verdict: Verdict{Action: "drop", Table: 10, TableName: "IngressDefault", Reason: "the matched flow drops"},
			dpActs:  "drop",
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			tr, err := ParseTrace(readTestdata(t, tc.file), pipelineNames)
			if err != nil {
				t.Fatal(err)
			}
			var tables []string
			for _, s := range tr.Steps {
				tables = append(tables, s.TableName)
			}
			if diff := cmp.Diff(tc.tables, tables); diff != "" {
				t.Errorf("tables (-want +got):\n%s", diff)
			}
			if len(tr.Recirculations) != tc.passes {
				t.Errorf("%d recirculations, want %d", len(tr.Recirculations), tc.passes)
			}
			if diff := cmp.Diff(tc.verdict, tr.Verdict); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if tc.dpActs != "" && tr.DatapathActions != tc.dpActs {
				t.Errorf("datapath actions %q, want %q", tr.DatapathActions, tc.dpActs)
			}
		})
	}
}

// TestParseTraceStep checks one step's fields in full: the conjunction
// flow that allowed a -> b.
func TestParseTraceStep(t *testing.T) {
	tr, err := ParseTrace(readTestdata(t, "trace-allowed.txt"), pipelineNames)
	if err != nil {
		t.Fatal(err)
	}
	want := Step{Pass: 1, Table: 9, TableName: "IngressRule", Match: "conj_id=1,ip", Priority: 200,
		Cookie: 0x103000000000001, Actions: []string{"set_field:0x1->reg3", "goto_table:11"}}
	var got *Step
	for i := range tr.Steps {
		if tr.Steps[i].Table == 9 {
			got = &tr.Steps[i]
		}
	}
	if got == nil {
		t.Fatal("no IngressRule step")
	}
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("IngressRule step (-want +got):\n%s", diff)
	}
	first := tr.Steps[0]
	if first.Pass != 0 || first.Match != "in_port=3" || first.Cookie != 0x102000000000003 {
		t.Errorf("first step = %+v", first)
	}
	commit := tr.Steps[len(tr.Steps)-2]
	if len(commit.Notes) != 3 || commit.Notes[1] != "NXM_NX_CT_LABEL[32..63] is now 0x1" {
		t.Errorf("ConntrackCommit notes = %q", commit.Notes)
	}
	if tr.Flow[:4] != "tcp," {
		t.Errorf("flow = %q", tr.Flow)
	}
}

func TestParseTraceRejectsOtherText(t *testing.T) {
	for _, in := range []string{"", "Bad openflow flow syntax: x", "Flow: tcp\n\nbridge(\"br-int\")\n---\n"} {
		if _, err := ParseTrace(in, pipelineNames); err == nil {
			t.Errorf("ParseTrace(%q) succeeded", in)
		}
	}
}

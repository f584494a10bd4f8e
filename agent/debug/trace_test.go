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
			// Output tells OVS to output to the tunnel (port 2), but OVS
			// does not: ">> Not tunneling to our own address", and the
			// datapath actions have no output. ofproto/trace resumed the
			// pass after ct() with tun_dst=198.18.0.12, which
			// L3Forwarding set before ct(), and took it for the tunnel
			// the packet came in on (ofproto-dpif-xlate.c compares the
			// output's tunnel destination with the one the translation
			// started with). The datapath does tunnel it (TestNetwork's
			// cross-node traffic), so the verdict is the output to the
			// tunnel, with OVS's warning and why it is the trace's alone
			// as a note.
			file: "trace-remote.txt",
			tables: []string{"Classifier", "SpoofGuard", "L3Forwarding", "Conntrack",
				"ConntrackState", "EgressRule", "EgressDefault", "EgressMetric", "L2Forwarding", "IngressRule",
				"IngressDefault", "IngressMetric", "ConntrackCommit", "Output"},
			passes: 1,
			verdict: Verdict{Action: "output", Port: 2, Table: 13, TableName: "Output",
				Note: "OVS: Not tunneling to our own address " + traceTunnelArtifact},
			dpActs: "ct(commit,zone=65520,label=0/0xffffffffffffffff)",
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
	want := Step{Pass: 1, Bridge: "br-int", Table: 9, TableName: "IngressRule", Match: "conj_id=1,ip", Priority: 200,
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

// TestParseTraceVerdictFromDatapathActions checks that only the final
// datapath actions make an output, whatever the flows' actions say, and
// that steps of another bridge (through a patch port, indented) are
// neither named nor taken for the traced bridge's.
func TestParseTraceVerdictFromDatapathActions(t *testing.T) {
	const head = "Flow: tcp,in_port=3,nw_src=198.19.0.2,nw_dst=198.19.0.3\n\nbridge(\"br-int\")\n----------------\n" +
		" 0. in_port=3, priority 200, cookie 0x1\n    goto_table:13\n" +
		"13. ip, priority 200, cookie 0x2\n    output:7\n"
	for _, tc := range []struct {
		name, tail string
		want       Verdict
		// bridges are the steps' bridges and table names.
		bridges []string
		// outputActions are the Output step's, if not nil.
		outputActions []string
	}{
		{
			name: "output",
			tail: "     -> output port is 7\n\nFinal flow: unchanged\nMegaflow: x\nDatapath actions: 4\n",
			want: Verdict{Action: "output", Port: 7, Table: 13, TableName: "Output"},
		},
		{
			name: "output skipped",
			tail: "     >> skipping output to input port\n\nFinal flow: unchanged\nMegaflow: x\nDatapath actions: drop\n",
			want: Verdict{Action: "drop", Table: 13, TableName: "Output", Reason: "OVS: skipping output to input port"},
		},
		{
			name: "native tunnel in a clone",
			tail: "     -> output port is 7\n\nFinal flow: unchanged\nMegaflow: x\n" +
				"Datapath actions: clone(tnl_push(tnl_port(3),header(size=50,type=5),out_port(2)),1)\n",
			want: Verdict{Action: "output", Port: 7, Table: 13, TableName: "Output"},
		},
		{
			// The peer's trace is indented when more actions follow
			// (ofproto-dpif-trace.c, oftrace_node_print_details).
			name: "patch port into another bridge, then more actions",
			tail: "\n    bridge(\"br-ex\")\n    ---------------\n" +
				"         0. priority 0\n            drop\n    set_field:0x1->reg1\n" +
				"\nFinal flow: unchanged\nMegaflow: x\nDatapath actions: drop\n",
			want:          Verdict{Action: "drop", Table: 0, Reason: reasonDrops},
			bridges:       []string{"br-int Classifier", "br-int Output", "br-ex "},
			outputActions: []string{"output:7", "set_field:0x1->reg1"},
		},
		{
			// As the last thing of its table, it is not.
			name: "patch port into another bridge, last",
			tail: "\nbridge(\"br-ex\")\n---------------\n" +
				" 0. priority 0\n    drop\n\nFinal flow: unchanged\nMegaflow: x\nDatapath actions: drop\n",
			want:    Verdict{Action: "drop", Table: 0, Reason: reasonDrops},
			bridges: []string{"br-int Classifier", "br-int Output", "br-ex "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := ParseTrace(head+tc.tail, pipelineNames)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, tr.Verdict); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if tr.Bridge != "br-int" {
				t.Errorf("traced bridge %q, want br-int", tr.Bridge)
			}
			if tc.outputActions != nil {
				if diff := cmp.Diff(tc.outputActions, tr.Steps[1].Actions); diff != "" {
					t.Errorf("Output step's actions (-want +got):\n%s", diff)
				}
			}
			if tc.bridges == nil {
				return
			}
			var got []string
			for _, s := range tr.Steps {
				got = append(got, s.Bridge+" "+s.TableName)
			}
			if diff := cmp.Diff(tc.bridges, got); diff != "" {
				t.Errorf("steps' bridges (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOutputs(t *testing.T) {
	for actions, want := range map[string]bool{
		"7": true, "ct(commit,zone=65520,label=0x1/0xff),7": true, "set(ipv4(ttl=63)),3,4": true,
		"clone(tnl_push(tnl_port(3),header(size=50),out_port(2)),1)": true, "lb_output(1)": true,
		"drop": false, "": false, "ct(commit,zone=65520,label=0/0xffffffffffffffff)": false,
		"set(ipv4(ttl=63)),ct(zone=65520),recirc(0x5)": false, "clone(ct(commit))": false,
	} {
		if got := outputs(actions); got != want {
			t.Errorf("outputs(%q) = %v, want %v", actions, got, want)
		}
	}
}

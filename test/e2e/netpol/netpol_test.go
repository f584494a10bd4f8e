package netpol

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/test/lab/probe"
)

var pods = []string{"x/a", "x/b", "y/a", "y/b"}

func newReach(t *testing.T, allowed bool) *Reachability {
	t.Helper()
	r, err := NewReachability(pods, allowed)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReachabilityHelpers(t *testing.T) {
	tests := []struct {
		name  string
		build func(r *Reachability)
		want  string
	}{
		{
			name:  "default allowed",
			build: func(*Reachability) {},
			want: "" +
				"TCP/80 x/a x/b y/a y/b\n" +
				"x/a    -   .   .   .\n" +
				"x/b    .   -   .   .\n" +
				"y/a    .   .   -   .\n" +
				"y/b    .   .   .   -\n",
		},
		{
			name:  "everything into namespace x blocked",
			build: func(r *Reachability) { r.ExpectPeer(Peer{}, Peer{Namespace: "x"}, false) },
			want: "" +
				"TCP/80 x/a x/b y/a y/b\n" +
				"x/a    -   X   .   .\n" +
				"x/b    X   -   .   .\n" +
				"y/a    X   X   -   .\n" +
				"y/b    X   X   .   -\n",
		},
		{
			name: "column blocked but one pair",
			build: func(r *Reachability) {
				r.ExpectAllIngress("x/a", false)
				r.Expect("y/b", "x/a", true)
			},
			want: "" +
				"TCP/80 x/a x/b y/a y/b\n" +
				"x/a    -   .   .   .\n" +
				"x/b    X   -   .   .\n" +
				"y/a    X   .   -   .\n" +
				"y/b    .   .   .   -\n",
		},
		{
			name:  "row blocked",
			build: func(r *Reachability) { r.ExpectAllEgress("y/a", false) },
			want: "" +
				"TCP/80 x/a x/b y/a y/b\n" +
				"x/a    -   .   .   .\n" +
				"x/b    .   -   .   .\n" +
				"y/a    X   X   -   X\n" +
				"y/b    .   .   .   -\n",
		},
		{
			name:  "peer pattern by pod name across namespaces",
			build: func(r *Reachability) { r.ExpectPeer(Peer{Pod: "b"}, Peer{Namespace: "y", Pod: "a"}, false) },
			want: "" +
				"TCP/80 x/a x/b y/a y/b\n" +
				"x/a    -   .   .   .\n" +
				"x/b    .   -   X   .\n" +
				"y/a    .   .   -   .\n" +
				"y/b    .   .   X   -\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReach(t, true)
			tc.build(r)
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, r.Expected.Render("TCP/80")); diff != "" {
				t.Errorf("matrix mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReachabilityMisuseIsAnError(t *testing.T) {
	r := newReach(t, true)
	r.Expect("x/a", "q/q", false)
	r.ExpectAllIngress("nope/a", false)
	r.ExpectPeer(Peer{Namespace: "w"}, Peer{}, false)
	err := r.Err()
	if err == nil {
		t.Fatal("want an error for unknown pods")
	}
	for _, want := range []string{"q/q", "nope/a", "matches no pair"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := NewTable([]string{"x/a", "x/a"}, true); err == nil {
		t.Error("NewTable accepted a duplicate pod")
	}
	if _, err := NewTable([]string{"xa"}, true); err == nil {
		t.Error("NewTable accepted a pod without namespace")
	}
}

func TestResultStringShowsExpectedObservedDiff(t *testing.T) {
	exp := newReach(t, true)
	exp.ExpectAllIngress("x/a", false)
	obs := newReach(t, true)
	obs.ExpectAllIngress("x/a", false)
	obs.Expect("y/b", "x/a", true)  // wrong: allowed
	obs.Expect("x/a", "y/a", false) // wrong: blocked
	res := &Result{
		Port: 80, Protocol: TCP, Method: "connections",
		Expected: exp.Expected, Observed: obs.Expected,
		Details: map[Pair]string{{"x/a", "y/a"}: "i/o timeout"},
		Retried: []Pair{{"x/a", "y/a"}, {"y/b", "x/a"}},
		Retries: 2,
	}
	if diff := cmp.Diff([]Pair{{"x/a", "y/a"}, {"y/b", "x/a"}}, res.Wrong()); diff != "" {
		t.Errorf("Wrong() mismatch (-want +got):\n%s", diff)
	}
	want := "" +
		"TCP/80 verdicts by connections (. allowed, X blocked, - self-traffic, ignored)\n" +
		"expected:\n" +
		"TCP/80 x/a x/b y/a y/b\n" +
		"x/a    -   .   .   .\n" +
		"x/b    X   -   .   .\n" +
		"y/a    X   .   -   .\n" +
		"y/b    X   .   .   -\n" +
		"observed:\n" +
		"TCP/80 x/a x/b y/a y/b\n" +
		"x/a    -   .   X   .\n" +
		"x/b    X   -   .   .\n" +
		"y/a    X   .   -   .\n" +
		"y/b    .   .   .   -\n" +
		"diff (X: observed differs from expected):\n" +
		"TCP/80 x/a x/b y/a y/b\n" +
		"x/a    -   .   X   .\n" +
		"x/b    .   -   .   .\n" +
		"y/a    .   .   -   .\n" +
		"y/b    X   .   .   -\n" +
		"2 wrong of 12 pairs (after 2 retries of 2)\n" +
		"  x/a -> y/a: observed blocked, expected allowed (i/o timeout)\n" +
		"  y/b -> x/a: observed allowed, expected blocked\n"
	if diff := cmp.Diff(want, res.String()); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
}

func TestDifferences(t *testing.T) {
	a := newReach(t, true)
	b := newReach(t, true)
	b.ExpectAllEgress("x/b", false)
	d, err := a.Expected.Differences(b.Expected)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Pair{{"x/b", "x/a"}, {"x/b", "y/a"}, {"x/b", "y/b"}}, d); diff != "" {
		t.Errorf("Differences mismatch (-want +got):\n%s", diff)
	}
	other, err := NewTable([]string{"x/a"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Expected.Differences(other); err == nil {
		t.Error("Differences of tables over different pods: want an error")
	}
}

func TestFirstConfirmed(t *testing.T) {
	m := func(ok ...bool) map[int]measured {
		out := map[int]measured{}
		for i, v := range ok {
			out[i] = measured{index: i, ok: v}
		}
		return out
	}
	tests := []struct {
		name    string
		results map[int]measured
		want    int
		wantOK  bool
	}{
		{"nothing yet", m(), 0, false},
		{"one new verdict is not enough", m(false, true), 0, false},
		{"two consecutive", m(false, false, true, true), 2, true},
		{"a flicker is not confirmed", m(true, false, true, true), 2, true},
		{"an earlier probe still running", map[int]measured{1: {index: 1, ok: true}, 2: {index: 2, ok: true}}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstConfirmed(tc.results)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("firstConfirmed = %d, %v; want %d, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestSample(t *testing.T) {
	var cs []Change
	for i := range 20 {
		cs = append(cs, Change{Pair: Pair{From: string(rune('a' + i)), To: "z"}})
	}
	got := Sample(cs, 4)
	var from []string
	for _, c := range got {
		from = append(from, c.From)
	}
	if diff := cmp.Diff([]string{"a", "f", "k", "p"}, from); diff != "" {
		t.Errorf("Sample mismatch (-want +got):\n%s", diff)
	}
	if len(Sample(cs[:3], 4)) != 3 {
		t.Error("Sample of fewer than n changes must keep them all")
	}
}

func TestParseTrace(t *testing.T) {
	tests := []struct {
		file      string
		actions   string
		ports     []int
		delivers2 bool
		delivers1 bool
	}{
		// x/a (ofport 1) -> x/b (ofport 2), x/b isolated: dropped in IngressDefault.
		{"trace_drop.txt", "drop", nil, false, false},
		// x/b (ofport 2) -> x/a (ofport 1): committed and output to port 1.
		{"trace_allow.txt", "ct(commit,zone=65520),2", []int{1}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := ParseTrace(string(data))
			if err != nil {
				t.Fatal(err)
			}
			if tr.DatapathActions != tc.actions {
				t.Errorf("DatapathActions = %q, want %q", tr.DatapathActions, tc.actions)
			}
			if diff := cmp.Diff(tc.ports, tr.OutputPorts); diff != "" {
				t.Errorf("OutputPorts mismatch (-want +got):\n%s", diff)
			}
			if got := tr.Delivers(1); got != tc.delivers1 {
				t.Errorf("Delivers(1) = %v, want %v", got, tc.delivers1)
			}
			if got := tr.Delivers(2); got != tc.delivers2 {
				t.Errorf("Delivers(2) = %v, want %v", got, tc.delivers2)
			}
		})
	}
	if _, err := ParseTrace("Bad openflow flow syntax"); err == nil {
		t.Error("ParseTrace of an error message: want an error")
	}
}

func TestParsePortRow(t *testing.T) {
	out := `{"data":[["pal5253ec94",["map",[["palisade-ip","198.19.0.3"],["palisade-mac","b6:a6:8a:0b:dc:b6"],["palisade-pod-name","b"]]]]],"headings":["name","external_ids"]}`
	name, ids, err := parsePortRow(out)
	if err != nil {
		t.Fatal(err)
	}
	if name != "pal5253ec94" || ids["palisade-mac"] != "b6:a6:8a:0b:dc:b6" || ids["palisade-ip"] != "198.19.0.3" {
		t.Errorf("parsePortRow = %q, %v", name, ids)
	}
	if _, _, err := parsePortRow(`{"data":[],"headings":["name","external_ids"]}`); err == nil {
		t.Error("no port: want an error")
	}
}

func TestPercentileAndReport(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {1, time.Millisecond}} {
		if got := Percentile(ds, tc.p); got != tc.want {
			t.Errorf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}

	var r Recorder
	r.Add(ChangeSample{Case: "A", Kind: "create", Changed: 2, Pairs: []Realization{
		{Latency: 10 * time.Millisecond, Realized: true}, {Latency: 30 * time.Millisecond, Realized: true}}})
	r.Add(ChangeSample{Case: "B", Kind: "delete", Changed: 1, Pairs: []Realization{{Realized: false}}})
	rep := r.Report()
	if rep.PerPair.N != 2 || rep.PerChange.N != 1 || rep.PerChange.Max != 30*time.Millisecond || rep.Unrealized != 1 {
		t.Errorf("Report = %+v", rep)
	}
	md := rep.Markdown()
	for _, want := range []string{"| per change (slowest measured pair) | 1 | 30.0 ms |", "| per change: create | 1 |", "1 measured pair(s) never"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(r.Detail(), "not realized") {
		t.Errorf("Detail lacks the unrealized change:\n%s", r.Detail())
	}
}

func TestRealize(t *testing.T) {
	pods := []probe.Pod{
		{Namespace: "x", Name: "a", IP: "198.19.0.2", Netns: "/n/a"},
		{Namespace: "x", Name: "b", IP: "198.19.0.3", Netns: "/n/b"},
	}
	change := Change{Pair: Pair{"x/a", "x/b"}, Allowed: false}
	since := time.Now()
	flipAt := since.Add(50 * time.Millisecond)
	tests := []struct {
		name         string
		decide       func() bool // the pair's verdict now
		wantRealized bool
	}{
		{"flips after 50ms", func() bool { return time.Now().Before(flipAt) }, true},
		{"never flips", func() bool { return true }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Prober{decide: func(ctx context.Context, _, _ probe.Pod, _ int, _ string, timeout time.Duration) (bool, string, error) {
				if !tc.decide() {
					// A blocked probe waits out its timeout.
					select {
					case <-time.After(timeout):
					case <-ctx.Done():
					}
					return false, "timeout", nil
				}
				return true, "", nil
			}}
			start := time.Now()
			got, err := p.Realize(context.Background(), pods, 80, TCP, []Change{change}, since, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Realize took %s, want it bounded by its limit", took)
			}
			if len(got) != 1 || got[0].Realized != tc.wantRealized {
				t.Fatalf("Realize = %+v, want realized=%v", got, tc.wantRealized)
			}
			if tc.wantRealized && (got[0].Latency < 50*time.Millisecond || got[0].Latency > 50*time.Millisecond+3*measureInterval) {
				t.Errorf("latency %s, want within [50ms, 80ms]", got[0].Latency)
			}
		})
	}
	if _, err := (&Prober{}).Realize(context.Background(), pods, 80, SCTP, []Change{change}, since, time.Second); err == nil {
		t.Error("Realize on SCTP: want an error")
	}
}

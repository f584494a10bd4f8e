package debug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/openflow/openflowtest"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// scaleFixture is a node of n policies of one rule each (the shape of the
// datapath's 10k-rule benchmark: about 9.6 flows per rule).
func scaleFixture(t testing.TB, n int) (*datapath.Datapath, *bridge) {
	t.Helper()
	ctx := context.Background()
	st := openflowtest.StateOf(openflowtest.Shape{Rules: n, Peers: 10, Targets: 10, Spread: true})
	for key, p := range st.Policy.Policies {
		p.SourceRef = cp.NetworkPolicyReference{Namespace: "bench", Name: key}
	}
	br := &bridge{flows: map[string]of.Flow{}, packets: func(of.Flow) uint64 { return 1 }}
	dp := datapath.New(br)
	if err := dp.SetPolicy(ctx, st.Policy); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Pods {
		if err := dp.AddPod(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return dp, br
}

// TestFlowsSummaryScale lists 10,000 policies: every entry is attributed
// once, so this takes well under a second where attributing every entry
// per policy took about 20 minutes.
func TestFlowsSummaryScale(t *testing.T) {
	const n = 10000
	dp, br := scaleFixture(t, n)
	s := &Server{Datapath: dp, Dumper: br}
	start := time.Now()
	rec := get(t, s, FlowsPath)
	took := time.Since(start)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got []PolicySummary
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d policies, want %d", len(got), n)
	}
	// The summary counts what each policy's own listing shows.
	for i := 0; i < n; i += n / 5 {
		p := got[i]
		rec := get(t, s, FlowsPath+"?policy="+p.Policy)
		var pf PolicyFlows
		if err := json.Unmarshal(rec.Body.Bytes(), &pf); err != nil {
			t.Fatalf("%v: %s", err, rec.Body)
		}
		shared := 0
		for _, f := range pf.Flows {
			if len(f.SharedWith) > 0 {
				shared++
			}
		}
		if p.Rules != 1 || p.Flows != len(pf.Flows) || p.Shared != shared || shared == 0 {
			t.Errorf("summary %+v; its listing has %d flows, %d shared", p, len(pf.Flows), shared)
		}
	}
	t.Logf("GET %s of %d policies, %d flows: %v", FlowsPath, n, dp.FlowCount(), took)
	// Generous for a loaded CI machine; quadratic work takes minutes.
	if took > 10*time.Second {
		t.Errorf("GET %s of %d policies took %v", FlowsPath, n, took)
	}
}

// BenchmarkFlowsSummary is GET /debug/flows without a policy on nodes of
// 1,000 and 10,000 policies (about 9.6 flows each): the time grows with
// the flows, not with policies times flows.
func BenchmarkFlowsSummary(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			dp, br := scaleFixture(b, n)
			s := &Server{Datapath: dp, Dumper: br}
			for b.Loop() {
				if rec := get(b, s, FlowsPath); rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
			b.ReportMetric(float64(dp.FlowCount()), "flows")
		})
	}
}

func TestFlowsStopWithTheRequest(t *testing.T) {
	dp, br := scaleFixture(t, 100)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	all := dp.Policies()
	if _, err := NewIndex(ctx, all, dp.Flows()); !errors.Is(err, context.Canceled) {
		t.Errorf("NewIndex with a canceled context: %v", err)
	}
	ix, err := NewIndex(context.Background(), all, dp.Flows())
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := br.DumpFlows(context.Background(), of.AllTables, 0, 0)
	if _, err := Summarize(ctx, ix, all, entries); !errors.Is(err, context.Canceled) {
		t.Errorf("Summarize with a canceled context: %v", err)
	}
	if _, err := Attribute(ctx, ix, all[0], entries, FlowFilter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Attribute with a canceled context: %v", err)
	}
}

// blockingDumper holds DumpFlows until released.
type blockingDumper struct {
	*bridge
	entered, release chan struct{}
}

func (d blockingDumper) DumpFlows(ctx context.Context, table uint8, cookie, mask uint64) ([]of.FlowEntry, error) {
	select {
	case d.entered <- struct{}{}:
	default:
	}
	<-d.release
	return d.bridge.DumpFlows(ctx, table, cookie, mask)
}

func TestDebugRequestsOneAtATime(t *testing.T) {
	dp, br := fixture(t)
	d := blockingDumper{bridge: br, entered: make(chan struct{}, 1), release: make(chan struct{})}
	s := &Server{Datapath: dp, Dumper: d, Trace: (&fakeTrace{text: readTestdata(t, "trace-denied.txt")}).trace}
	mux := http.NewServeMux()
	s.Register(mux)
	first := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, FlowsPath, nil))
		first <- rec.Code
	}()
	<-d.entered
	for _, target := range []string{FlowsPath, TracePath + "?from=dbg/c&to=dbg/b&port=80"} {
		rec := get(t, s, target)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("GET %s while another runs = %d %q, want 503 with Retry-After", target, rec.Code, rec.Body)
		}
	}
	close(d.release)
	if code := <-first; code != http.StatusOK {
		t.Errorf("first request: %d", code)
	}
	if rec := get(t, s, TracePath+"?from=dbg/c&to=dbg/b&port=80"); rec.Code != http.StatusOK {
		t.Errorf("GET %s after the first one ended = %d %q", TracePath, rec.Code, rec.Body)
	}
}

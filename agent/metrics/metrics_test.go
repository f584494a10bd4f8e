package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/openflow"
)

type fakeSource struct {
	stats datapath.Stats
	err   error
}

func (f fakeSource) Stats(context.Context, datapath.FlowStatsReader) (datapath.Stats, error) {
	return f.stats, f.err
}

func (f fakeSource) FlowCounts() map[string]int { return map[string]int{"IngressRule": 4, "Output": 3} }

// Policies has x/web with two ingress rules, the second with named ports
// resolved twice (two conjunctions, one rule), and one egress rule.
func (f fakeSource) Policies() []openflow.Realization {
	in0 := openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Ingress", Index: 0}
	in1 := openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Ingress", Index: 1}
	eg0 := openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Egress", Index: 0}
	return []openflow.Realization{{Namespace: "x", Name: "web", Rules: map[uint32]openflow.RuleRef{1: in0, 2: in1, 3: in1, 4: eg0}}}
}

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func TestServer(t *testing.T) {
	src := fakeSource{stats: datapath.Stats{
		Rules: []datapath.RuleStats{{Rule: openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Ingress", Index: 1},
			Sessions: 3, Packets: 40, Bytes: 5000}},
		Drops: []datapath.DropStats{{Direction: "Ingress", Packets: 2, Bytes: 120}},
	}}
	var ready error = errors.New("datapath not started")
	for _, tc := range []struct {
		name      string
		pprof     bool
		path      string
		wantCode  int
		wantLines []string
	}{
		{"metrics", false, "/metrics", 200, []string{
			`palisade_agent_rule_sessions_total{direction="Ingress",policy_name="web",policy_namespace="x",rule="1"} 3`,
			`palisade_agent_rule_packets_total{direction="Ingress",policy_name="web",policy_namespace="x",rule="1"} 40`,
			`palisade_agent_rule_bytes_total{direction="Ingress",policy_name="web",policy_namespace="x",rule="1"} 5000`,
			`palisade_agent_default_drop_packets_total{direction="Ingress"} 2`,
			`palisade_agent_flows{table="IngressRule"} 4`,
			`palisade_agent_rule_stats_scrape_errors 0`,
			`palisade_agent_networkpolicies 1`,
			`palisade_agent_policy_rules{direction="Ingress"} 2`,
			`palisade_agent_policy_rules{direction="Egress"} 1`,
		}},
		{"healthz", false, "/healthz", 200, []string{"ok"}},
		{"not ready", false, "/readyz", 503, []string{"datapath not started"}},
		{"pprof disabled", false, "/debug/pprof/", 404, nil},
		{"pprof enabled", true, "/debug/pprof/", 200, []string{"goroutine"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := NewRegistry(klog.Background(), src, nil)
			srv := httptest.NewServer(Handler(ServerConfig{Registry: reg, Ready: func() error { return ready }, EnablePprof: tc.pprof}))
			defer srv.Close()
			code, body := get(t, srv, tc.path)
			if code != tc.wantCode {
				t.Fatalf("GET %s: status %d, want %d:\n%s", tc.path, code, tc.wantCode, body)
			}
			for _, l := range tc.wantLines {
				if !strings.Contains(body, l) {
					t.Errorf("GET %s lacks %q:\n%s", tc.path, l, body)
				}
			}
		})
	}
	ready = nil
	srv := httptest.NewServer(Handler(ServerConfig{Registry: NewRegistry(klog.Background(), src, nil), Ready: func() error { return ready }}))
	defer srv.Close()
	if code, body := get(t, srv, "/readyz"); code != 200 {
		t.Fatalf("/readyz when ready: %d %s", code, body)
	}
}

func TestScrapeErrorIsReported(t *testing.T) {
	reg := NewRegistry(klog.Background(), fakeSource{err: errors.New("OVS is gone")}, nil)
	srv := httptest.NewServer(Handler(ServerConfig{Registry: reg, Ready: func() error { return nil }}))
	defer srv.Close()
	code, body := get(t, srv, "/metrics")
	if code != 200 || !strings.Contains(body, "palisade_agent_rule_stats_scrape_errors 1") {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
}

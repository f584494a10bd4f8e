package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/util/workqueue"
)

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

// TestRegistry checks the names of every metric the controller exports
// (Prometheus' lint: units, _total on counters, help texts) and the values
// of the model's size and of a named workqueue.
func TestRegistry(t *testing.T) {
	reg := NewRegistry(func() Counts {
		return Counts{Policies: 3, AppliedToGroups: 2, AddressGroups: 1, ConnectedAgents: 4}
	})
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test-queue", MetricsProvider: WorkqueueProvider})
	defer q.ShutDown()
	q.Add("a")
	q.Add("b")
	key, _ := q.Get()
	q.Done(key)
	q.AddRateLimited("c")
	SyncDuration.WithLabelValues(SyncPolicy).Observe(0.001)
	SyncDuration.WithLabelValues(SyncGroup).Observe(0.002)
	Leader.Set(1)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	const want = `
# HELP palisade_controller_address_groups AddressGroups in the internal model.
# TYPE palisade_controller_address_groups gauge
palisade_controller_address_groups 1
# HELP palisade_controller_applied_to_groups AppliedToGroups in the internal model.
# TYPE palisade_controller_applied_to_groups gauge
palisade_controller_applied_to_groups 2
# HELP palisade_controller_connected_agents Nodes whose agent has an open watch of the controller.
# TYPE palisade_controller_connected_agents gauge
palisade_controller_connected_agents 4
# HELP palisade_controller_leader 1 when this replica is the leader (it computes the model and serves the agents), 0 when it is a standby.
# TYPE palisade_controller_leader gauge
palisade_controller_leader 1
# HELP palisade_controller_networkpolicies NetworkPolicies in the internal model.
# TYPE palisade_controller_networkpolicies gauge
palisade_controller_networkpolicies 3
# HELP palisade_controller_workqueue_adds_total Keys added to the workqueue.
# TYPE palisade_controller_workqueue_adds_total counter
palisade_controller_workqueue_adds_total{name="test-queue"} 2
# HELP palisade_controller_workqueue_depth Keys waiting in the workqueue.
# TYPE palisade_controller_workqueue_depth gauge
palisade_controller_workqueue_depth{name="test-queue"} 1
# HELP palisade_controller_workqueue_retries_total Keys re-added to the workqueue after a failure (rate limited).
# TYPE palisade_controller_workqueue_retries_total counter
palisade_controller_workqueue_retries_total{name="test-queue"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"palisade_controller_networkpolicies", "palisade_controller_applied_to_groups", "palisade_controller_address_groups",
		"palisade_controller_connected_agents", "palisade_controller_leader",
		"palisade_controller_workqueue_adds_total", "palisade_controller_workqueue_depth", "palisade_controller_workqueue_retries_total",
	); err != nil {
		t.Error(err)
	}
	for _, name := range []string{"palisade_controller_sync_duration_seconds", "palisade_controller_workqueue_queue_duration_seconds",
		"palisade_controller_workqueue_work_duration_seconds", "palisade_controller_workqueue_unfinished_work_seconds",
		"palisade_controller_workqueue_longest_running_processor_seconds"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, err %v; want some", name, n, err)
		}
	}
}

func TestReadiness(t *testing.T) {
	var r Readiness
	steps := []struct {
		set     func()
		wantErr string
	}{
		{func() {}, "not the leader"},
		{r.SetListening, "not the leader"},
		{r.SetLeader, "informers not synced"},
		{r.SetSynced, ""},
	}
	for i, s := range steps {
		s.set()
		err := r.Check()
		switch {
		case s.wantErr == "" && err != nil:
			t.Errorf("step %d: Check() = %v, want ready", i, err)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Errorf("step %d: Check() = %v, want %q", i, err, s.wantErr)
		}
	}
	var notListening Readiness
	notListening.SetLeader()
	notListening.SetSynced()
	if err := notListening.Check(); err == nil || !strings.Contains(err.Error(), "not listening") {
		t.Errorf("Check() = %v, want not listening", err)
	}
}

func TestServer(t *testing.T) {
	reg := NewRegistry(func() Counts { return Counts{Policies: 1} })
	var r Readiness
	for _, tc := range []struct {
		name     string
		pprof    bool
		ready    bool
		path     string
		wantCode int
		wantBody string
	}{
		{"metrics", false, false, "/metrics", 200, "palisade_controller_networkpolicies 1"},
		{"healthz on a standby", false, false, "/healthz", 200, "ok"},
		{"readyz on a standby", false, false, "/readyz", 503, "not the leader"},
		{"readyz on the leader", false, true, "/readyz", 200, "ok"},
		{"pprof disabled", false, false, "/debug/pprof/", 404, ""},
		{"pprof enabled", true, false, "/debug/pprof/", 200, "goroutine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ready {
				r.SetLeader()
				r.SetSynced()
				r.SetListening()
			}
			srv := httptest.NewServer(Handler(ServerConfig{Registry: reg, Ready: r.Check, EnablePprof: tc.pprof}))
			defer srv.Close()
			code, body := get(t, srv, tc.path)
			if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("GET %s = %d %q, want %d with %q", tc.path, code, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

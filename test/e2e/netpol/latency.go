package netpol

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// ChangeSample is the measured realization of one API change (a policy
// created, updated or deleted, a label changed).
type ChangeSample struct {
	Case string
	// Kind is what changed: "create", "update", "delete" or "label".
	Kind     string
	Port     int
	Protocol string
	// Changed is how many pairs' verdicts the change flipped; Pairs are
	// the ones measured (see MaxMeasuredPairs).
	Changed int
	Pairs   []Realization
}

// Max is the change's realization: when its last measured pair showed the
// new verdict. ok is false if a pair never did.
func (s ChangeSample) Max() (time.Duration, bool) {
	var m time.Duration
	for _, p := range s.Pairs {
		if !p.Realized {
			return 0, false
		}
		m = max(m, p.Latency)
	}
	return m, len(s.Pairs) > 0
}

// Recorder collects samples over a suite; safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	samples []ChangeSample
}

// Add records a sample.
func (r *Recorder) Add(s ChangeSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
}

// Samples returns the recorded samples.
func (r *Recorder) Samples() []ChangeSample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999999)
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Stats summarizes a set of latencies.
type Stats struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// Summarize computes Stats.
func Summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	return Stats{N: len(ds), P50: Percentile(ds, 50), P90: Percentile(ds, 90), P99: Percentile(ds, 99), Max: slices.Max(ds)}
}

// Report is the suite's latency figures.
type Report struct {
	// PerPair are the latencies of every measured pair; PerChange the
	// realization of every change (its slowest measured pair).
	PerPair, PerChange Stats
	// ByKind is PerChange by kind of change.
	ByKind map[string]Stats
	// Unrealized counts measured pairs that never showed their new verdict.
	Unrealized int
	// AtFirstProbe counts measured pairs already realized when measuring
	// started (their latency is an upper bound set by the API call and the
	// test's own overhead).
	AtFirstProbe int
}

// Report computes the figures of the recorded samples.
func (r *Recorder) Report() Report {
	rep := Report{ByKind: map[string]Stats{}}
	var pairs, changes []time.Duration
	byKind := map[string][]time.Duration{}
	for _, s := range r.Samples() {
		for _, p := range s.Pairs {
			if p.Realized {
				pairs = append(pairs, p.Latency)
				if p.AtFirstProbe {
					rep.AtFirstProbe++
				}
			} else {
				rep.Unrealized++
			}
		}
		if m, ok := s.Max(); ok {
			changes = append(changes, m)
			byKind[s.Kind] = append(byKind[s.Kind], m)
		}
	}
	rep.PerPair, rep.PerChange = Summarize(pairs), Summarize(changes)
	for k, ds := range byKind {
		rep.ByKind[k] = Summarize(ds)
	}
	return rep
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// Markdown renders the report as a table.
func (rep Report) Markdown() string {
	var b strings.Builder
	b.WriteString("| what | n | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- | --- |\n")
	row := func(name string, s Stats) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", name, s.N, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
	}
	row("per changed pair", rep.PerPair)
	row("per change (slowest measured pair)", rep.PerChange)
	kinds := make([]string, 0, len(rep.ByKind))
	for k := range rep.ByKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		row("per change: "+k, rep.ByKind[k])
	}
	if rep.AtFirstProbe > 0 {
		fmt.Fprintf(&b, "\n%d of %d measured pairs were already realized at their first probe: their figure is an upper bound.\n", rep.AtFirstProbe, rep.PerPair.N)
	}
	if rep.Unrealized > 0 {
		fmt.Fprintf(&b, "\n%d measured pair(s) never showed their new verdict within the limit.\n", rep.Unrealized)
	}
	return b.String()
}

// Detail lists every sample, one line each, for the test log.
func (r *Recorder) Detail() string {
	var b strings.Builder
	for _, s := range r.Samples() {
		m, ok := s.Max()
		state := ms(m)
		if !ok {
			state = "not realized"
		}
		fmt.Fprintf(&b, "%-40s %-6s %s/%d changed=%d measured=%d realization=%s\n", s.Case, s.Kind, s.Protocol, s.Port, s.Changed, len(s.Pairs), state)
	}
	return b.String()
}

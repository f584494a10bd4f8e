// Package netpol is the reachability-matrix method of the upstream
// Kubernetes NetworkPolicy e2e suite, written for Palisade's lab: a truth
// table of the expected verdict for every ordered pair of pods (default
// allowed, with helpers that block or allow a row, a column or a pattern of
// peers), a prober that fills the observed table with real connections (or,
// for SCTP, with ovs-appctl ofproto/trace verdicts), and a rendering of the
// expected, observed and difference matrices for people.
//
// Pods are named "namespace/name". Traffic from a pod to itself never
// crosses the bridge and is ignored, as upstream does.
package netpol

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
)

// Peer selects pods of the model: an empty Namespace or Pod matches any.
type Peer struct {
	Namespace string
	Pod       string
}

// Matches reports whether the pod "namespace/name" is selected by p.
func (p Peer) Matches(pod string) bool {
	ns, name, _ := strings.Cut(pod, "/")
	return (p.Namespace == "" || p.Namespace == ns) && (p.Pod == "" || p.Pod == name)
}

// Pair is an ordered pair of pods: a connection from From to To.
type Pair struct {
	From, To string
}

func (p Pair) String() string { return p.From + " -> " + p.To }

// Table is a truth table over the ordered pairs of a set of pods.
type Table struct {
	pods  []string
	index map[string]int
	cells []bool // row-major: from * len(pods) + to
}

// NewTable returns a table over pods (kept in the given order) with every
// cell set to value. Duplicate pods are an error.
func NewTable(pods []string, value bool) (*Table, error) {
	t := &Table{pods: slices.Clone(pods), index: make(map[string]int, len(pods)), cells: make([]bool, len(pods)*len(pods))}
	for i, p := range pods {
		if _, dup := t.index[p]; dup {
			return nil, fmt.Errorf("pod %s listed twice", p)
		}
		if !strings.Contains(p, "/") {
			return nil, fmt.Errorf("pod %q is not namespace/name", p)
		}
		t.index[p] = i
	}
	for i := range t.cells {
		t.cells[i] = value
	}
	return t, nil
}

// Pods returns the table's pods in order.
func (t *Table) Pods() []string { return slices.Clone(t.pods) }

// Has reports whether pod is in the table.
func (t *Table) Has(pod string) bool {
	_, ok := t.index[pod]
	return ok
}

// Get returns the cell of the pair; ok is false if a pod is unknown.
func (t *Table) Get(from, to string) (value, ok bool) {
	i, okFrom := t.index[from]
	j, okTo := t.index[to]
	if !okFrom || !okTo {
		return false, false
	}
	return t.cells[i*len(t.pods)+j], true
}

// Set sets the cell of the pair; it returns an error if a pod is unknown.
func (t *Table) Set(from, to string, value bool) error {
	i, okFrom := t.index[from]
	j, okTo := t.index[to]
	if !okFrom || !okTo {
		return fmt.Errorf("unknown pair %s -> %s (pods: %s)", from, to, strings.Join(t.pods, " "))
	}
	t.cells[i*len(t.pods)+j] = value
	return nil
}

// Clone returns an independent copy.
func (t *Table) Clone() *Table {
	c := &Table{pods: slices.Clone(t.pods), index: make(map[string]int, len(t.index)), cells: slices.Clone(t.cells)}
	for k, v := range t.index {
		c.index[k] = v
	}
	return c
}

// SamePods reports whether both tables are over the same pods in the same
// order.
func (t *Table) SamePods(o *Table) bool { return slices.Equal(t.pods, o.pods) }

// Pairs returns every ordered pair except self-traffic, row by row.
func (t *Table) Pairs() []Pair {
	var out []Pair
	for _, from := range t.pods {
		for _, to := range t.pods {
			if from != to {
				out = append(out, Pair{from, to})
			}
		}
	}
	return out
}

// Differences returns the pairs (self-traffic excluded) whose cells differ
// between t and o, which must be over the same pods.
func (t *Table) Differences(o *Table) ([]Pair, error) {
	if !t.SamePods(o) {
		return nil, fmt.Errorf("tables are over different pods: %v and %v", t.pods, o.pods)
	}
	var out []Pair
	for _, p := range t.Pairs() {
		a, _ := t.Get(p.From, p.To)
		b, _ := o.Get(p.From, p.To)
		if a != b {
			out = append(out, p)
		}
	}
	return out, nil
}

// render prints the table with one row per source pod and one column per
// destination pod: mark(from, to) gives each cell's text, "-" is printed
// for self-traffic.
func (t *Table) render(title string, mark func(from, to string) string) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', 0)
	fmt.Fprintf(w, "%s\t%s\n", title, strings.Join(t.pods, "\t"))
	for _, from := range t.pods {
		row := make([]string, len(t.pods))
		for j, to := range t.pods {
			row[j] = "-"
			if from != to {
				row[j] = mark(from, to)
			}
		}
		fmt.Fprintf(w, "%s\t%s\n", from, strings.Join(row, "\t"))
	}
	_ = w.Flush()
	return b.String()
}

// Render prints the table with "." for allowed and "X" for blocked cells.
func (t *Table) Render(title string) string {
	return t.render(title, func(from, to string) string {
		if v, _ := t.Get(from, to); v {
			return "."
		}
		return "X"
	})
}

// Reachability is the expected verdict of every pair: a Table with the
// upstream suite's helpers. Helpers given an unknown pod record an error,
// returned by Err, instead of panicking.
type Reachability struct {
	Expected *Table
	errs     []string
}

// NewReachability expects every pair among pods to be allowed (or
// blocked).
func NewReachability(pods []string, allowed bool) (*Reachability, error) {
	t, err := NewTable(pods, allowed)
	if err != nil {
		return nil, err
	}
	return &Reachability{Expected: t}, nil
}

// Err reports the helpers' misuses (unknown pods, peers matching nothing).
func (r *Reachability) Err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid expectation: %s", strings.Join(r.errs, "; "))
}

// Expect sets one pair.
func (r *Reachability) Expect(from, to string, allowed bool) {
	if err := r.Expected.Set(from, to, allowed); err != nil {
		r.errs = append(r.errs, err.Error())
	}
}

// ExpectPeer sets every pair whose source matches from and destination
// matches to.
func (r *Reachability) ExpectPeer(from, to Peer, allowed bool) {
	n := 0
	for _, f := range r.Expected.pods {
		for _, t := range r.Expected.pods {
			if from.Matches(f) && to.Matches(t) {
				_ = r.Expected.Set(f, t, allowed)
				n++
			}
		}
	}
	if n == 0 {
		r.errs = append(r.errs, fmt.Sprintf("ExpectPeer(%+v, %+v) matches no pair", from, to))
	}
}

// ExpectAllIngress sets the column of pod: every connection to it.
func (r *Reachability) ExpectAllIngress(pod string, allowed bool) {
	if !r.Expected.Has(pod) {
		r.errs = append(r.errs, "ExpectAllIngress: unknown pod "+pod)
		return
	}
	for _, f := range r.Expected.pods {
		_ = r.Expected.Set(f, pod, allowed)
	}
}

// ExpectAllEgress sets the row of pod: every connection from it.
func (r *Reachability) ExpectAllEgress(pod string, allowed bool) {
	if !r.Expected.Has(pod) {
		r.errs = append(r.errs, "ExpectAllEgress: unknown pod "+pod)
		return
	}
	for _, t := range r.Expected.pods {
		_ = r.Expected.Set(pod, t, allowed)
	}
}

// Result is one validated matrix: what was expected, what the probes
// observed (after the retry of wrong cells) and why blocked cells were
// blocked.
type Result struct {
	Port     int
	Protocol string
	// Method says how verdicts were obtained ("connections" or
	// "ofproto/trace").
	Method   string
	Expected *Table
	Observed *Table
	// Details holds, per pair, the probe's error or the trace's datapath
	// actions.
	Details map[Pair]string
	// Retried are the pairs that were wrong on the first pass and probed
	// again.
	Retried []Pair
	// Retries is how many times wrong pairs were probed again.
	Retries int
}

// Wrong returns the pairs whose observed verdict differs from the expected
// one (self-traffic ignored).
func (r *Result) Wrong() []Pair {
	d, err := r.Expected.Differences(r.Observed)
	if err != nil {
		// Both tables are built over the same pods by the prober.
		return r.Expected.Pairs()
	}
	return d
}

func (r *Result) title() string { return fmt.Sprintf("%s/%d", r.Protocol, r.Port) }

// String renders the expected, observed and difference matrices and lists
// the wrong pairs with their details.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s verdicts by %s (. allowed, X blocked, - self-traffic, ignored)\n", r.title(), r.Method)
	fmt.Fprintf(&b, "expected:\n%s", r.Expected.Render(r.title()))
	fmt.Fprintf(&b, "observed:\n%s", r.Observed.Render(r.title()))
	wrong := r.Wrong()
	wrongSet := map[Pair]bool{}
	for _, p := range wrong {
		wrongSet[p] = true
	}
	fmt.Fprintf(&b, "diff (X: observed differs from expected):\n%s", r.Expected.render(r.title(), func(from, to string) string {
		if wrongSet[Pair{from, to}] {
			return "X"
		}
		return "."
	}))
	fmt.Fprintf(&b, "%d wrong of %d pairs", len(wrong), len(r.Expected.Pairs()))
	if len(r.Retried) > 0 {
		fmt.Fprintf(&b, " (after %d retries of %d)", r.Retries, len(r.Retried))
	}
	b.WriteString("\n")
	for _, p := range wrong {
		want, _ := r.Expected.Get(p.From, p.To)
		fmt.Fprintf(&b, "  %s: observed %s, expected %s", p, verdictWord(!want), verdictWord(want))
		if d := r.Details[p]; d != "" {
			fmt.Fprintf(&b, " (%s)", d)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func verdictWord(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "blocked"
}

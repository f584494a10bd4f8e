package netpol

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"palisade.dev/palisade/test/lab/probe"
)

// Protocols of the model. TCP and UDP are probed with real connections;
// SCTP cannot be opened on the lab's kernel and is read from OVS's own
// classifier with ofproto/trace.
const (
	TCP  = "TCP"
	UDP  = "UDP"
	SCTP = "SCTP"
)

// Defaults of a Prober.
const (
	// DefaultTimeout bounds one connection of a matrix: a blocked cell
	// costs that long.
	DefaultTimeout = time.Second
	// DefaultParallelism bounds the concurrent connections of a matrix.
	DefaultParallelism = 32
)

// Realization measurement: every changed pair (at most MaxMeasuredPairs of
// them per change) gets a new short probe every measureInterval; a probe
// that has no answer within measureTimeout counts as blocked. A pair is
// realized when two consecutive probes show the new verdict; its latency is
// the start of the first of them.
const (
	MaxMeasuredPairs = 8
	measureInterval  = 10 * time.Millisecond
	measureTimeout   = 200 * time.Millisecond
)

// Prober fills observed matrices.
type Prober struct {
	// Tracer gives SCTP verdicts; nil makes SCTP an error.
	Tracer *Tracer
	// Timeout bounds one connection of a matrix (DefaultTimeout if zero).
	Timeout time.Duration
	// Parallelism bounds concurrent probes (DefaultParallelism if zero).
	Parallelism int
	// decide replaces Verdict in unit tests.
	decide func(ctx context.Context, from, to probe.Pod, port int, proto string, timeout time.Duration) (bool, string, error)
}

func (p *Prober) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultTimeout
}

func (p *Prober) parallelism() int {
	if p.Parallelism > 0 {
		return p.Parallelism
	}
	return DefaultParallelism
}

// Method names how verdicts of proto are obtained.
func Method(proto string) string {
	if proto == SCTP {
		return "ofproto/trace"
	}
	return "connections"
}

// Verdict decides one pair: a real connection for TCP and UDP (allowed when
// the destination answered with its name), a trace for SCTP. detail says
// why a pair was blocked (or, for traces, the datapath actions). err is for
// failures to decide at all (a cancelled context, a failed trace).
func (p *Prober) Verdict(ctx context.Context, from, to probe.Pod, port int, proto string, timeout time.Duration) (allowed bool, detail string, err error) {
	if p.decide != nil {
		return p.decide(ctx, from, to, port, proto, timeout)
	}
	switch proto {
	case TCP, UDP:
		err := probe.One(ctx, from, to, port, proto, timeout)
		if ctx.Err() != nil {
			return false, "", ctx.Err()
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	case SCTP:
		if p.Tracer == nil {
			return false, "", errors.New("SCTP verdicts need a Tracer")
		}
		return p.Tracer.Verdict(ctx, from, to, port, proto)
	default:
		return false, "", fmt.Errorf("unsupported protocol %q", proto)
	}
}

// podIndex maps "namespace/name" to the lab's pods and checks that every
// pod of the table is there with an address.
func podIndex(pods []probe.Pod, t *Table) (map[string]probe.Pod, error) {
	byKey := make(map[string]probe.Pod, len(pods))
	for _, p := range pods {
		byKey[p.Key()] = p
	}
	for _, k := range t.Pods() {
		p, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("pod %s of the model is not in the lab", k)
		}
		if p.IP == "" || p.Netns == "" {
			return nil, fmt.Errorf("pod %s has no address yet", k)
		}
	}
	return byKey, nil
}

type verdict struct {
	allowed bool
	detail  string
}

// probePairs decides pairs concurrently (bounded).
func (p *Prober) probePairs(ctx context.Context, byKey map[string]probe.Pod, pairs []Pair, port int, proto string, timeout time.Duration) (map[Pair]verdict, error) {
	out := make(map[Pair]verdict, len(pairs))
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, p.parallelism())
	var wg sync.WaitGroup
	for _, pair := range pairs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			allowed, detail, err := p.Verdict(ctx, byKey[pair.From], byKey[pair.To], port, proto, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", pair, err))
				return
			}
			out[pair] = verdict{allowed, detail}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Check probes every pair of exp's pods (self-traffic excluded) on
// port/proto, probes the wrong pairs again (checkRetries), and returns the expected and
// observed matrices. Wrong pairs are in Result.Wrong; err is for probes that
// could not run.
func (p *Prober) Check(ctx context.Context, pods []probe.Pod, port int, proto string, exp *Table) (*Result, error) {
	byKey, err := podIndex(pods, exp)
	if err != nil {
		return nil, err
	}
	obs, err := NewTable(exp.Pods(), false)
	if err != nil {
		return nil, err
	}
	res := &Result{Port: port, Protocol: proto, Method: Method(proto), Expected: exp.Clone(), Observed: obs, Details: map[Pair]string{}}
	record := func(vs map[Pair]verdict) {
		for pair, v := range vs {
			_ = obs.Set(pair.From, pair.To, v.allowed)
			res.Details[pair] = v.detail
		}
	}
	vs, err := p.probePairs(ctx, byKey, exp.Pairs(), port, proto, p.timeout())
	if err != nil {
		return nil, err
	}
	record(vs)
	// Wrong pairs are probed again, up to checkRetries times, checkPause
	// apart (as the upstream suite retries its probes): a connection lost in
	// flight is not a verdict. A wrong verdict that lasts beyond that fails.
	for i := 0; i < checkRetries; i++ {
		wrong := res.Wrong()
		if len(wrong) == 0 {
			break
		}
		if i == 0 {
			res.Retried = wrong
		}
		res.Retries = i + 1
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(checkPause):
		}
		vs, err := p.probePairs(ctx, byKey, wrong, port, proto, p.timeout())
		if err != nil {
			return nil, err
		}
		record(vs)
	}
	return res, nil
}

// How often and how far apart Check probes wrong pairs again.
const (
	checkRetries = 2
	checkPause   = 500 * time.Millisecond
)

// Settle probes with short timeouts until every pair shows its expected
// verdict or limit passes, and reports whether it converged. It is for
// changes whose previous matrix is unknown; Check decides afterwards.
func (p *Prober) Settle(ctx context.Context, pods []probe.Pod, port int, proto string, exp *Table, limit time.Duration) (bool, error) {
	byKey, err := podIndex(pods, exp)
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(limit)
	pending := exp.Pairs()
	for {
		vs, err := p.probePairs(ctx, byKey, pending, port, proto, measureTimeout)
		if err != nil {
			return false, err
		}
		pending = slices.DeleteFunc(pending, func(pair Pair) bool {
			want, _ := exp.Get(pair.From, pair.To)
			return vs[pair].allowed == want
		})
		if len(pending) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(measureInterval):
		}
	}
}

// Change is a pair whose expected verdict changed, with the new verdict.
type Change struct {
	Pair
	Allowed bool
}

// Realization is when one changed pair showed its new verdict.
type Realization struct {
	Change
	// Latency is from the change's start to the start of the first of two
	// consecutive probes that showed the new verdict (an upper bound at the
	// probe interval's resolution).
	Latency time.Duration
	// Realized is false if the pair did not show the new verdict in time.
	Realized bool
	// Probes is how many probes were made.
	Probes int
	// AtFirstProbe is set if the very first probe already showed the new
	// verdict: the change was realized before measuring started, and
	// Latency is only the start of measuring.
	AtFirstProbe bool
}

// Sample picks at most n changes, spread evenly over the list.
func Sample(changes []Change, n int) []Change {
	if len(changes) <= n {
		return changes
	}
	out := make([]Change, 0, n)
	for i := range n {
		out = append(out, changes[i*len(changes)/n])
	}
	return out
}

// Realize measures, for each change (at most MaxMeasuredPairs of them,
// spread over the list), when short probes first showed the new verdict,
// relative to since. Pairs are measured concurrently; each stops once
// realized or after limit. SCTP cannot be measured (traces are not
// packets).
func (p *Prober) Realize(ctx context.Context, pods []probe.Pod, port int, proto string, changes []Change, since time.Time, limit time.Duration) ([]Realization, error) {
	if proto != TCP && proto != UDP {
		return nil, fmt.Errorf("realization is measured with TCP or UDP connections, not %s", proto)
	}
	byKey := make(map[string]probe.Pod, len(pods))
	for _, pod := range pods {
		byKey[pod.Key()] = pod
	}
	changes = Sample(changes, MaxMeasuredPairs)
	for _, c := range changes {
		for _, k := range []string{c.From, c.To} {
			if pod, ok := byKey[k]; !ok || pod.IP == "" {
				return nil, fmt.Errorf("pod %s is not in the lab or has no address", k)
			}
		}
	}
	out := make([]Realization, len(changes))
	deadline := time.Now().Add(limit)
	var wg sync.WaitGroup
	for i, c := range changes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = p.realizeOne(ctx, byKey[c.From], byKey[c.To], port, proto, c, since, deadline)
		}()
	}
	wg.Wait()
	return out, ctx.Err()
}

type measured struct {
	index int
	start time.Time
	ok    bool // showed the new verdict
}

func (p *Prober) realizeOne(ctx context.Context, from, to probe.Pod, port int, proto string, c Change, since, deadline time.Time) Realization {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := map[int]measured{}
	ch := make(chan measured)
	launched, inflight := 0, 0
	launch := func() {
		m := measured{index: launched, start: time.Now()}
		launched++
		inflight++
		go func() {
			allowed, _, err := p.Verdict(ctx, from, to, port, proto, measureTimeout)
			m.ok = err == nil && allowed == c.Allowed
			select {
			case ch <- m:
			case <-ctx.Done():
			}
		}()
	}
	tick := time.NewTicker(measureInterval)
	defer tick.Stop()
	launch()
	for {
		select {
		case m := <-ch:
			inflight--
			results[m.index] = m
			if j, ok := firstConfirmed(results); ok {
				return Realization{Change: c, Latency: results[j].start.Sub(since), Realized: true, Probes: launched, AtFirstProbe: j == 0}
			}
			if inflight == 0 && time.Now().After(deadline) {
				return Realization{Change: c, Probes: launched}
			}
		case <-tick.C:
			if time.Now().Before(deadline) {
				launch()
			} else if inflight == 0 {
				return Realization{Change: c, Probes: launched}
			}
		case <-ctx.Done():
			return Realization{Change: c, Probes: launched}
		}
	}
}

// firstConfirmed returns the first probe index j such that probes j and
// j+1 both showed the new verdict and every earlier probe has finished.
func firstConfirmed(results map[int]measured) (int, bool) {
	for j := 0; ; j++ {
		r, done := results[j]
		if !done {
			return 0, false
		}
		if !r.ok {
			continue
		}
		next, done := results[j+1]
		if !done {
			return 0, false
		}
		if next.ok {
			return j, true
		}
	}
}

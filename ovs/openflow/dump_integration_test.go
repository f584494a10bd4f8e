//go:build integration

package openflow

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDumpFlowsDecodesEveryMatch installs a flow of every feature and
// checks that the matches OVS reports decode to the same keys.
func TestDumpFlowsDecodesEveryMatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, c := setup(t, ctx)
	flows := everyFeatureFlows()
	if err := c.Apply(ctx, Changes{Add: flows}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	entries, err := c.DumpFlows(ctx, AllTables, 0, 0)
	if err != nil {
		t.Fatalf("DumpFlows: %v", err)
	}
	var want, got []string
	for _, f := range flows {
		want = append(want, f.DumpKey())
	}
	for _, e := range entries {
		if len(e.Unknown) > 0 {
			t.Errorf("flow %s: undecoded match fields %v", e.Key(), e.Unknown)
		}
		got = append(got, e.Key())
	}
	sort.Strings(want)
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("decoded flow keys (-installed +dumped):\n%s", diff)
	}
	// A cookie filter selects one flow.
	one, err := c.DumpFlows(ctx, AllTables, flows[0].Cookie, ^uint64(0))
	if err != nil {
		t.Fatalf("DumpFlows by cookie: %v", err)
	}
	for _, e := range one {
		if e.Cookie != flows[0].Cookie {
			t.Fatalf("DumpFlows(cookie 0x%x) returned a flow of cookie 0x%x", flows[0].Cookie, e.Cookie)
		}
	}
	if len(one) == 0 {
		t.Fatalf("DumpFlows(cookie 0x%x) returned nothing", flows[0].Cookie)
	}
}

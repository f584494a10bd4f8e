package datapath

import (
	"context"
	"fmt"

	"palisade.dev/palisade/agent/openflow"
	of "palisade.dev/palisade/ovs/openflow"
)

// CacheFlusher empties OVS's datapath flow cache (`ovs-appctl
// revalidator/purge`), so every packet is classified by the current tables.
type CacheFlusher func(ctx context.Context) error

// FlushAfterPolicyChanges returns an applier that flushes OVS's datapath
// flow cache after every bundle that changed policy or isolation flows.
//
// OVS revalidates its cached datapath flows after a flow table change, but
// the e2e suite caught cached flows that kept committing new connections for
// seconds after a bundle made the tables drop them (docs/design/pipeline.md,
// "Flushing the datapath cache"). A policy must never be bypassed, so the
// agent pays for re-classifying live traffic after each policy change.
func FlushAfterPolicyChanges(a FlowApplier, flush CacheFlusher) FlowApplier {
	return flushingApplier{a, flush}
}

type flushingApplier struct {
	FlowApplier
	flush CacheFlusher
}

func (f flushingApplier) Apply(ctx context.Context, ch of.Changes) error {
	if err := f.FlowApplier.Apply(ctx, ch); err != nil {
		return err
	}
	if !touchesPolicy(ch) {
		return nil
	}
	if err := f.flush(ctx); err != nil {
		// The flows are in, but cached datapath flows may still follow the
		// old ones: failing makes the datapath apply (idempotently) and
		// flush again.
		return fmt.Errorf("flushing the datapath flow cache after a policy change: %w", err)
	}
	return nil
}

func touchesPolicy(ch of.Changes) bool {
	if ch.ReplaceAll {
		return true
	}
	for _, fs := range [][]of.Flow{ch.Add, ch.Modify, ch.Delete} {
		for _, f := range fs {
			if c := f.Cookie & openflow.CookieCategoryMask; c == openflow.CookiePolicy || c == openflow.CookieIsolate {
				return true
			}
		}
	}
	return false
}

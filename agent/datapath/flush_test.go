package datapath

import (
	"context"
	"errors"
	"testing"

	aof "palisade.dev/palisade/agent/openflow"
	of "palisade.dev/palisade/ovs/openflow"
)

func TestFlushAfterPolicyChanges(t *testing.T) {
	policyFlow := of.Flow{Cookie: aof.CookiePolicy | 7}
	isolateFlow := of.Flow{Cookie: aof.CookieIsolate | 3}
	podFlow := of.Flow{Cookie: aof.CookiePod | 3}
	tests := []struct {
		name      string
		ch        of.Changes
		applyErr  error
		flushErr  error
		wantFlush bool
		wantErr   bool
	}{
		{name: "pod flows only", ch: of.Changes{Add: []of.Flow{podFlow}}},
		{name: "rule added", ch: of.Changes{Add: []of.Flow{policyFlow}}, wantFlush: true},
		{name: "rule deleted", ch: of.Changes{Delete: []of.Flow{policyFlow}}, wantFlush: true},
		{name: "isolation modified", ch: of.Changes{Modify: []of.Flow{isolateFlow}}, wantFlush: true},
		{name: "replace all", ch: of.Changes{ReplaceAll: true}, wantFlush: true},
		{name: "refused bundle: no flush", ch: of.Changes{Add: []of.Flow{policyFlow}}, applyErr: errors.New("refused"), wantErr: true},
		{name: "flush fails", ch: of.Changes{Add: []of.Flow{policyFlow}}, flushErr: errors.New("no socket"), wantFlush: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{flows: map[string]of.Flow{}}
			if tc.applyErr != nil {
				r.fail = true
			}
			flushed := false
			a := FlushAfterPolicyChanges(r, func(context.Context) error { flushed = true; return tc.flushErr })
			err := a.Apply(context.Background(), tc.ch)
			if (err != nil) != tc.wantErr || flushed != tc.wantFlush {
				t.Errorf("err=%v flushed=%v, want err=%v flushed=%v", err, flushed, tc.wantErr, tc.wantFlush)
			}
		})
	}
}

package datapath

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// counters answers FlowStats from a recorder's flows, each flow counting
// what count gives it.
type counters struct {
	r     *recorder
	count func(f of.Flow) (packets, bytes uint64)
	err   error
}

func (c counters) FlowStats(_ context.Context, table uint8, cookie, mask uint64) ([]of.FlowStat, error) {
	if c.err != nil {
		return nil, c.err
	}
	var out []of.FlowStat
	for _, f := range c.r.flows {
		if f.Table.ID == table && f.Cookie&mask == cookie&mask {
			p, b := c.count(f)
			out = append(out, of.FlowStat{Table: table, Priority: f.Priority, Cookie: f.Cookie, Packets: p, Bytes: b})
		}
	}
	return out, nil
}

func TestStatsAttributesCountersToRules(t *testing.T) {
	ctx := context.Background()
	r := &recorder{flows: map[string]of.Flow{}}
	dp := New(r)
	st := denyAll("b")
	st.Policies["p"].SourceRef = cp.NetworkPolicyReference{Namespace: "x", Name: "web"}
	st.Policies["p"].Rules = []cp.Rule{
		{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}},
		{Direction: cp.DirectionIn, Services: []cp.Service{{Protocol: cp.ProtocolUDP, Port: "53"}}},
	}
	for _, step := range []error{dp.AddPod(ctx, testPod("a", 2)), dp.AddPod(ctx, testPod("b", 3)), dp.SetPolicy(ctx, st), dp.Start(ctx)} {
		if step != nil {
			t.Fatal(step)
		}
	}
	c := counters{r: r, count: func(f of.Flow) (uint64, uint64) {
		if kind, id, ok := openflow.ParseMetricCookie(f.Cookie); ok {
			if kind == openflow.MetricSessions {
				return uint64(id), 0
			}
			return 10 * uint64(id), 1000 * uint64(id)
		}
		if f.Cookie&openflow.CookieCategoryMask == openflow.CookieIsolate {
			return 7, 700
		}
		return 99, 99
	}}
	got, err := dp.Stats(ctx, c)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	want := Stats{
		Rules: []RuleStats{
			{Rule: openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Ingress", Index: 0}, Sessions: 1, Packets: 10, Bytes: 1000},
			{Rule: openflow.RuleRef{Namespace: "x", Name: "web", Direction: "Ingress", Index: 1}, Sessions: 2, Packets: 20, Bytes: 2000},
		},
		Drops: []DropStats{{Direction: "Egress"}, {Direction: "Ingress", Packets: 7, Bytes: 700}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Stats (-want +got):\n%s", diff)
	}

	if counts := dp.FlowCounts(); counts["IngressMetric"] != 5 || counts["EgressMetric"] != 1 {
		t.Errorf("FlowCounts() = %v, want 5 flows in IngressMetric (2 per rule and the default) and 1 in EgressMetric", counts)
	}
	c.err = errors.New("connection lost")
	if _, err := dp.Stats(ctx, c); err == nil {
		t.Fatal("Stats succeeded although OVS did not answer")
	}
}

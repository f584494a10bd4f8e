package debug

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	cp "palisade.dev/palisade/controller/apis/controlplane"
	of "palisade.dev/palisade/ovs/openflow"
)

// bridge is a fake OVS: it keeps what the datapath applies and dumps it
// as OVS would, every flow counting packets() packets.
type bridge struct {
	flows   map[string]of.Flow
	packets func(of.Flow) uint64
}

func (b *bridge) Apply(_ context.Context, ch of.Changes) error {
	if ch.ReplaceAll {
		b.flows = map[string]of.Flow{}
	}
	for _, f := range ch.Delete {
		delete(b.flows, f.Key())
	}
	for _, f := range append(ch.Add, ch.Modify...) {
		b.flows[f.Key()] = f
	}
	return nil
}

func (b *bridge) DumpFlows(_ context.Context, table uint8, cookie, mask uint64) ([]of.FlowEntry, error) {
	var out []of.FlowEntry
	for _, f := range b.flows {
		if (table == of.AllTables || f.Table.ID == table) && f.Cookie&mask == cookie&mask {
			out = append(out, of.FlowEntry{FlowStat: of.FlowStat{Table: f.Table.ID, Priority: f.Priority,
				Cookie: f.Cookie, Packets: b.packets(f), Bytes: 100 * b.packets(f)}, Match: f.Match})
		}
	}
	return out, nil
}

func pod(name string, port int32) interfacestore.PodInterface {
	return interfacestore.PodInterface{PodNamespace: "dbg", PodName: name, OFPort: port,
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(port)}, IP: netip.AddrFrom4([4]byte{198, 19, 0, byte(port - 1)})}
}

func member(name string) cp.GroupMember {
	return cp.GroupMember{Pod: cp.PodReference{Namespace: "dbg", Name: name}}
}

// fixture is a node with pods a (port 3), b (4) and c (5) and three
// policies: b-from-a and b-web both allow TCP 80 to b (from a; from a and
// c), so they share clause flows and b's isolation; c-out lets c send
// anything.
func fixture(t *testing.T) (*datapath.Datapath, *bridge) {
	t.Helper()
	ctx := context.Background()
	br := &bridge{flows: map[string]of.Flow{}, packets: func(f of.Flow) uint64 { return uint64(f.Priority % 7) }}
	dp := datapath.New(br)
	dp.SetRound(3)
	st := cp.NewNodeState()
	st.AppliedToGroups["to-b"] = &cp.AppliedToGroup{Name: "to-b", Members: []cp.GroupMember{member("b")}}
	st.AppliedToGroups["to-c"] = &cp.AppliedToGroup{Name: "to-c", Members: []cp.GroupMember{member("c")}}
	st.AddressGroups["a"] = &cp.AddressGroup{Name: "a", Members: []cp.GroupMember{{Pod: member("a").Pod, IPs: []string{"198.19.0.2"}}}}
	st.AddressGroups["ac"] = &cp.AddressGroup{Name: "ac", Members: []cp.GroupMember{
		{Pod: member("a").Pod, IPs: []string{"198.19.0.2"}}, {Pod: member("c").Pod, IPs: []string{"198.19.0.4"}}}}
	tcp80 := []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}
	st.Policies["u1"] = &cp.NetworkPolicy{Name: "u1", SourceRef: cp.NetworkPolicyReference{Namespace: "dbg", Name: "b-from-a"},
		AppliedToGroups: []string{"to-b"}, PolicyTypes: []string{"Ingress"},
		Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"a"}}, Services: tcp80}}}
	st.Policies["u2"] = &cp.NetworkPolicy{Name: "u2", SourceRef: cp.NetworkPolicyReference{Namespace: "dbg", Name: "b-web"},
		AppliedToGroups: []string{"to-b"}, PolicyTypes: []string{"Ingress"},
		Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ac"}}, Services: tcp80}}}
	st.Policies["u3"] = &cp.NetworkPolicy{Name: "u3", SourceRef: cp.NetworkPolicyReference{Namespace: "dbg", Name: "c-out"},
		AppliedToGroups: []string{"to-c"}, PolicyTypes: []string{"Egress"},
		Rules: []cp.Rule{{Direction: cp.DirectionOut}}}
	gw := netip.MustParseAddr("198.19.0.1")
	steps := []error{
		dp.AddPod(ctx, pod("a", 3)), dp.AddPod(ctx, pod("b", 4)), dp.AddPod(ctx, pod("c", 5)),
		dp.SetNetwork(ctx, &openflow.NodeNetwork{PodCIDR: netip.MustParsePrefix("198.19.0.0/24"), GatewayPort: 1,
			GatewayIP: gw, GatewayMAC: openflow.GatewayMAC(gw), TunnelPort: 2}),
		dp.SetPolicy(ctx, st), dp.Start(ctx),
	}
	for _, err := range steps {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dp, br
}

// flowLine is a flow in one line, for comparisons.
func flowLine(f Flow) string {
	s := fmt.Sprintf("%s %s %s/%d %s -> %s", f.TableName, f.Kind, f.Direction, f.Rule, f.Match, f.Actions)
	if len(f.SharedWith) > 0 {
		s += " shared with " + strings.Join(f.SharedWith, " ")
	}
	return s
}

func get(t testing.TB, s *Server, target string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	s.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestFlowsOfPolicy(t *testing.T) {
	dp, br := fixture(t)
	s := &Server{Datapath: dp, Dumper: br}
	rec := get(t, s, FlowsPath+"?policy=dbg/b-from-a")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var pf PolicyFlows
	if err := json.Unmarshal(rec.Body.Bytes(), &pf); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range pf.Flows {
		lines = append(lines, flowLine(f))
		if f.Cookie>>openflow.CookieRoundShift != 3 {
			t.Errorf("flow %s: cookie 0x%x does not carry round 3", flowLine(f), f.Cookie)
		}
		if want := uint64(f.Priority % 7); f.Packets != want {
			t.Errorf("flow %s: %d packets, want %d (the bridge's counter)", flowLine(f), f.Packets, want)
		}
	}
	// b-web's rule is conjunction 2: it shares the target and service
	// clauses (and the peer a) with b-from-a's conjunction 1, and b's
	// default drop.
	want := []string{
		"IngressRule rule Ingress/0 ip,conj_id=1 -> load:0x1->NXM_NX_REG3[0..31],goto_table:IngressMetric",
		"IngressRule conjunction Ingress/0 ip,nw_src=198.19.0.2 -> conjunction(1,1/3),conjunction(2,1/3) shared with dbg/b-web/Ingress/0",
		"IngressRule conjunction Ingress/0 ip,reg1=0x4 -> conjunction(1,2/3),conjunction(2,2/3) shared with dbg/b-web/Ingress/0",
		"IngressRule conjunction Ingress/0 tcp,tp_dst=80 -> conjunction(1,3/3),conjunction(2,3/3) shared with dbg/b-web/Ingress/0",
		"IngressDefault isolation Ingress/-1 ip,reg1=0x4 -> drop shared with dbg/b-web",
		"IngressMetric metric Ingress/0 ip,ct_state=-new+trk,ct_label=0x100000000/0xffffffff00000000 -> goto_table:ConntrackCommit",
		"IngressMetric metric Ingress/0 ip,reg3=0x1,ct_state=+new+trk -> goto_table:ConntrackCommit",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("flows of dbg/b-from-a (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"dbg/b"}, pf.Targets); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}

	// Filters.
	rec = get(t, s, FlowsPath+"?policy=dbg/b-from-a&direction=Egress")
	if err := json.Unmarshal(rec.Body.Bytes(), &pf); err != nil || len(pf.Flows) != 0 {
		t.Errorf("egress flows of an ingress policy: %v %s", err, rec.Body)
	}
	// A rule's flows: not the isolation, which is no rule's.
	rec = get(t, s, FlowsPath+"?policy=dbg/c-out&direction=egress&rule=0")
	if err := json.Unmarshal(rec.Body.Bytes(), &pf); err != nil {
		t.Fatal(err)
	}
	lines = nil
	for _, f := range pf.Flows {
		lines = append(lines, flowLine(f))
	}
	want = []string{
		"EgressRule rule Egress/0 ip,in_port=5 -> load:0x3->NXM_NX_REG2[0..31],goto_table:EgressMetric",
		"EgressMetric metric Egress/0 ip,ct_state=-new+trk,ct_label=0x3/0xffffffff -> goto_table:L2Forwarding",
		"EgressMetric metric Egress/0 ip,reg2=0x3,ct_state=+new+trk -> goto_table:L2Forwarding",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("flows of dbg/c-out (-want +got):\n%s", diff)
	}
}

func TestFlowsSummary(t *testing.T) {
	dp, br := fixture(t)
	rec := get(t, &Server{Datapath: dp, Dumper: br}, FlowsPath)
	var got []PolicySummary
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, rec.Body)
	}
	want := []PolicySummary{
		{Policy: "dbg/b-from-a", Targets: []string{"dbg/b"}, Rules: 1, Flows: 7, Shared: 4},
		{Policy: "dbg/b-web", Targets: []string{"dbg/b"}, Rules: 1, Flows: 8, Shared: 4},
		{Policy: "dbg/c-out", Targets: []string{"dbg/c"}, Rules: 1, Flows: 4, Shared: 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}

func TestFlowsErrors(t *testing.T) {
	dp, br := fixture(t)
	s := &Server{Datapath: dp, Dumper: br}
	for _, tc := range []struct {
		query string
		code  int
		says  string
	}{
		{"?policy=dbg/nope", http.StatusNotFound, "policy dbg/nope is not realized on this node"},
		{"?policy=nope", http.StatusBadRequest, "want NAMESPACE/NAME"},
		{"?policy=dbg/b-web&direction=up", http.StatusBadRequest, "want Ingress or Egress"},
		{"?policy=dbg/b-web&rule=x", http.StatusBadRequest, "want a rule index"},
		{"?policy=dbg/b-web&rule=0", http.StatusBadRequest, "rule 0: add direction=Ingress or direction=Egress"},
		{"?direction=Ingress", http.StatusBadRequest, "direction and rule select flows of one policy: add policy=NAMESPACE/NAME"},
		{"?rule=0", http.StatusBadRequest, "direction and rule select flows of one policy"},
		{"?direction=Ingress&rule=0", http.StatusBadRequest, "direction and rule select flows of one policy"},
	} {
		rec := get(t, s, FlowsPath+tc.query)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.says) {
			t.Errorf("GET %s = %d %q, want %d saying %q", tc.query, rec.Code, rec.Body, tc.code, tc.says)
		}
	}
}

// fakeTrace answers ofproto/trace with a captured trace and records the
// flow it was asked for.
type fakeTrace struct {
	text   string
	flow   string
	ctNext []string
}

func (f *fakeTrace) trace(_ context.Context, flow string, ctNext ...string) (string, error) {
	f.flow, f.ctNext = flow, ctNext
	return f.text, nil
}

func TestTrace(t *testing.T) {
	dp, br := fixture(t)
	for _, tc := range []struct {
		name, query, testdata string
		wantFlow              string
		wantVerdict           Verdict
		// wantRules are the steps' rules, by table name.
		wantRules map[string]StepRule
	}{
		{
			name: "allowed", query: "?from=dbg/a&to=dbg/b&protocol=tcp&port=80", testdata: "trace-allowed.txt",
			wantFlow:    "tcp,in_port=3,dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:04,nw_src=198.19.0.2,nw_dst=198.19.0.3,nw_ttl=64,tcp_src=40000,tcp_dst=80",
			wantVerdict: Verdict{Action: "output", Port: 4, PortName: "pod dbg/b", Table: 13, TableName: "Output"},
			wantRules: map[string]StepRule{
				"IngressRule":   {Policy: "dbg/b-from-a", Direction: "Ingress", Index: 0, Via: "conj_id"},
				"IngressMetric": {Policy: "dbg/b-from-a", Direction: "Ingress", Index: 0, Via: "cookie"},
			},
		},
		{
			name: "denied", query: "?from=dbg/c&to=198.19.0.3&protocol=TCP&port=80", testdata: "trace-denied.txt",
			wantFlow: "tcp,in_port=5,dl_src=02:00:00:00:00:05,dl_dst=02:00:00:00:00:04,nw_src=198.19.0.4,nw_dst=198.19.0.3,nw_ttl=64,tcp_src=40000,tcp_dst=80",
			wantVerdict: Verdict{Action: "drop", Table: 10, TableName: "IngressDefault",
				Reason: "Ingress isolation: no ingress rule of dbg/b-from-a, dbg/b-web allows it"},
			wantRules: map[string]StepRule{
				"IngressDefault": {Policies: []string{"dbg/b-from-a", "dbg/b-web"}, Direction: "Ingress", Index: -1, Via: "isolation"},
			},
		},
		{
			name: "remote", query: "?from=dbg/a&to=198.19.1.2&protocol=UDP&port=80", testdata: "trace-remote.txt",
			// Not a local pod: sent to the gateway's MAC.
			wantFlow: "udp,in_port=3,dl_src=02:00:00:00:00:03,dl_dst=0a:58:c6:13:00:01,nw_src=198.19.0.2,nw_dst=198.19.1.2,nw_ttl=64,udp_src=40000,udp_dst=80",
			// Sent to the tunnel; OVS's trace cannot follow it there
			// (see TestParseTrace), which the note says.
			wantVerdict: Verdict{Action: "output", Port: 2, PortName: "tunnel", Table: 13, TableName: "Output",
				Note: "OVS: Not tunneling to our own address " + traceTunnelArtifact},
			wantRules: map[string]StepRule{},
		},
		{
			name: "icmp", query: "?from=dbg/a&to=dbg/b&protocol=ICMP", testdata: "trace-icmp-denied.txt",
			wantFlow: "icmp,in_port=3,dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:04,nw_src=198.19.0.2,nw_dst=198.19.0.3,nw_ttl=64,icmp_type=8,icmp_code=0",
			wantVerdict: Verdict{Action: "drop", Table: 10, TableName: "IngressDefault",
				Reason: "Ingress isolation: no ingress rule of dbg/b-from-a, dbg/b-web allows it"},
			wantRules: map[string]StepRule{
				"IngressDefault": {Policies: []string{"dbg/b-from-a", "dbg/b-web"}, Direction: "Ingress", Index: -1, Via: "isolation"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeTrace{text: readTestdata(t, tc.testdata)}
			rec := get(t, &Server{Datapath: dp, Dumper: br, Trace: ft.trace}, TracePath+tc.query)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ft.flow != tc.wantFlow {
				t.Errorf("traced flow\n %s\nwant\n %s", ft.flow, tc.wantFlow)
			}
			if diff := cmp.Diff([]string{"trk,new"}, ft.ctNext); diff != "" {
				t.Errorf("--ct-next (-want +got):\n%s", diff)
			}
			var res TraceResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantVerdict, res.Verdict); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			got := map[string]StepRule{}
			for _, s := range res.Steps {
				if s.Rule != nil {
					got[s.TableName] = *s.Rule
				}
			}
			if diff := cmp.Diff(tc.wantRules, got); diff != "" {
				t.Errorf("rules by table (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTraceErrors(t *testing.T) {
	dp, br := fixture(t)
	ft := &fakeTrace{text: "Bad openflow flow syntax"}
	s := &Server{Datapath: dp, Dumper: br, Trace: ft.trace}
	for _, tc := range []struct {
		query string
		code  int
		says  string
	}{
		{"?from=dbg/a", http.StatusBadRequest, "from and to are required"},
		{"?from=dbg/zz&to=dbg/b&port=80", http.StatusNotFound, "pod dbg/zz is not on this node"},
		{"?from=dbg/a&to=other/pod&port=80", http.StatusNotFound, "pod other/pod is not on this node: pass its IP"},
		{"?from=dbg/a&to=dbg/b&protocol=GRE", http.StatusBadRequest, "want TCP, UDP, SCTP or ICMP"},
		{"?from=dbg/a&to=dbg/b&protocol=TCP", http.StatusBadRequest, "TCP needs a destination port"},
		{"?from=dbg/a&to=dbg/b&port=99999", http.StatusBadRequest, "want 1..65535"},
		{"?from=dbg/a&to=::ffff:198.18.0.9&port=80", http.StatusBadRequest, "only IPv4"},
		{"?from=dbg/a&to=dbg/b&port=80", http.StatusBadGateway, "not ofproto/trace output"},
	} {
		rec := get(t, s, TracePath+tc.query)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.says) {
			t.Errorf("GET %s = %d %q, want %d saying %q", tc.query, rec.Code, rec.Body, tc.code, tc.says)
		}
	}
}

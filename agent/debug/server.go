package debug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/openflow"
	of "palisade.dev/palisade/ovs/openflow"
)

// Paths of the debug API.
const (
	FlowsPath = "/debug/flows"
	TracePath = "/debug/trace"
)

// Datapath is what the API reads of the agent's datapath
// (agent/datapath.Datapath).
type Datapath interface {
	Policies() []openflow.Realization
	Flows() []of.Flow
	Pods() []interfacestore.PodInterface
	Network() *openflow.NodeNetwork
}

// FlowDumper reads flows from OVS (ovs/openflow.Client).
type FlowDumper interface {
	DumpFlows(ctx context.Context, table uint8, cookie, cookieMask uint64) ([]of.FlowEntry, error)
}

// TraceFunc runs `ofproto/trace` for flow on the bridge with the given
// --ct-next states (ovs/ovsctl.Trace with the socket and bridge bound).
type TraceFunc func(ctx context.Context, flow string, ctNext ...string) (string, error)

// Server serves the debug API. It serves one request at a time: a
// request that comes while another runs is answered 503 (each can take
// the CPU for a while on a node with many policies).
type Server struct {
	Datapath Datapath
	Dumper   FlowDumper
	Trace    TraceFunc

	busy sync.Mutex
}

// Register adds the API's routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+FlowsPath, s.oneAtATime(s.serveFlows))
	mux.HandleFunc("GET "+TracePath, s.oneAtATime(s.serveTrace))
}

// RegisterRefused answers the API's routes with 403 and why they are not
// served.
func RegisterRefused(mux *http.ServeMux, why string) {
	refuse := func(w http.ResponseWriter, _ *http.Request) {
		httpError(w, http.StatusForbidden, "the debug API is disabled: %s", why)
	}
	mux.HandleFunc("GET "+FlowsPath, refuse)
	mux.HandleFunc("GET "+TracePath, refuse)
}

// oneAtATime serves with h unless another debug request is running.
func (s *Server) oneAtATime(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.busy.TryLock() {
			w.Header().Set("Retry-After", "1")
			httpError(w, http.StatusServiceUnavailable, "another debug request is running; retry when it is done")
			return
		}
		defer s.busy.Unlock()
		h(w, r)
	}
}

// policyCategories are the cookie categories of the flows a policy owns.
var policyCategories = []uint64{openflow.CookiePolicy, openflow.CookieMetric, openflow.CookieIsolate}

func (s *Server) dump(ctx context.Context) ([]of.FlowEntry, error) {
	var out []of.FlowEntry
	for _, c := range policyCategories {
		es, err := s.Dumper.DumpFlows(ctx, of.AllTables, c, openflow.CookieCategoryMask)
		if err != nil {
			return nil, fmt.Errorf("dumping the flows of cookie category 0x%x: %w", c>>48, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

func (s *Server) serveFlows(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	name := q.Get("policy")
	var filter FlowFilter
	if name == "" && (q.Has("direction") || q.Has("rule")) {
		httpError(w, http.StatusBadRequest, "direction and rule select flows of one policy: add policy=NAMESPACE/NAME")
		return
	}
	if name != "" && strings.Count(name, "/") != 1 {
		httpError(w, http.StatusBadRequest, "policy %q: want NAMESPACE/NAME", name)
		return
	}
	switch d := q.Get("direction"); d {
	case "":
	case "Ingress", "ingress":
		filter.Direction = "Ingress"
	case "Egress", "egress":
		filter.Direction = "Egress"
	default:
		httpError(w, http.StatusBadRequest, "direction %q: want Ingress or Egress", d)
		return
	}
	if q.Has("rule") {
		v := q.Get("rule")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			httpError(w, http.StatusBadRequest, "rule %q: want a rule index (0, 1, ...)", v)
			return
		}
		if filter.Direction == "" {
			httpError(w, http.StatusBadRequest, "rule %d: add direction=Ingress or direction=Egress", n)
			return
		}
		filter.Rule = &n
	}
	all := s.Datapath.Policies()
	var pol *openflow.Realization
	if name != "" {
		for i := range all {
			if policyName(all[i]) == name {
				pol = &all[i]
			}
		}
		if pol == nil {
			httpError(w, http.StatusNotFound, "policy %s is not realized on this node (it applies to none of its pods, or does not exist); %d policies are", name, len(all))
			return
		}
	}
	entries, err := s.dump(ctx)
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v", err)
		return
	}
	ix, err := NewIndex(ctx, all, s.Datapath.Flows())
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	var out any
	if pol == nil {
		out, err = Summarize(ctx, ix, all, entries)
	} else {
		out, err = Attribute(ctx, ix, *pol, entries, filter)
	}
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(ctx, w, out)
}

// TraceRequest is what /debug/trace traces: a new connection from a local
// pod to a pod or an IP.
type TraceRequest struct {
	From string // "namespace/name", a pod on this node
	// To is "namespace/name" of a pod on this node, or an IPv4 address.
	To       string
	Protocol string // TCP, UDP, SCTP or ICMP
	Port     uint16 // destination port (not for ICMP)
}

// TraceResult is a trace with what was traced.
type TraceResult struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port,omitempty"`
	// Packet is the flow given to ofproto/trace.
	Packet string `json:"packet"`
	Trace
}

// tracePacketSourcePort is the source port of traced TCP/UDP/SCTP packets.
const tracePacketSourcePort = 40000

// errNotFound marks trace input that names nothing on this node.
var errNotFound = errors.New("not found")

// packet builds the ofproto/trace flow for req: the source pod's port and
// addresses, the destination's IP and the MAC the source would send to (a
// local pod's own, otherwise the gateway's).
func (s *Server) packet(req TraceRequest) (string, error) {
	pods := s.Datapath.Pods()
	src, ok := findPod(pods, func(p interfacestore.PodInterface) bool { return p.PodKey() == req.From })
	if !ok {
		return "", fmt.Errorf("%w: pod %s is not on this node (trace runs on the source pod's node)", errNotFound, req.From)
	}
	var dstIP netip.Addr
	var dstMAC net.HardwareAddr
	if ip, err := netip.ParseAddr(req.To); err == nil {
		if !ip.Is4() {
			return "", fmt.Errorf("destination %s: only IPv4 is supported", ip)
		}
		dstIP = ip
		if p, ok := findPod(pods, func(p interfacestore.PodInterface) bool { return p.IP == ip }); ok {
			dstMAC = p.MAC
		}
	} else {
		if strings.Count(req.To, "/") != 1 {
			return "", fmt.Errorf("destination %q: want NAMESPACE/POD or an IPv4 address", req.To)
		}
		p, ok := findPod(pods, func(p interfacestore.PodInterface) bool { return p.PodKey() == req.To })
		if !ok {
			return "", fmt.Errorf("%w: pod %s is not on this node: pass its IP", errNotFound, req.To)
		}
		dstIP, dstMAC = p.IP, p.MAC
	}
	if dstMAC == nil {
		n := s.Datapath.Network()
		if n == nil {
			return "", fmt.Errorf("%s is not a local pod and the node has no gateway", dstIP)
		}
		dstMAC = n.GatewayMAC
	}
	proto := strings.ToLower(req.Protocol)
	l4 := ""
	switch proto {
	case "tcp", "udp", "sctp":
		if req.Port == 0 {
			return "", fmt.Errorf("%s needs a destination port", req.Protocol)
		}
		// ofproto/trace wants the protocol's own port fields.
		l4 = fmt.Sprintf(",%s_src=%d,%s_dst=%d", proto, tracePacketSourcePort, proto, req.Port)
	case "icmp":
		l4 = ",icmp_type=8,icmp_code=0" // echo request
	default:
		return "", fmt.Errorf("protocol %q: want TCP, UDP, SCTP or ICMP", req.Protocol)
	}
	return fmt.Sprintf("%s,in_port=%d,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=64%s",
		proto, src.OFPort, src.MAC, dstMAC, src.IP, dstIP, l4), nil
}

func (s *Server) serveTrace(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	req := TraceRequest{From: q.Get("from"), To: q.Get("to"), Protocol: strings.ToUpper(q.Get("protocol"))}
	if req.From == "" || req.To == "" {
		httpError(w, http.StatusBadRequest, "from and to are required")
		return
	}
	if req.Protocol == "" {
		req.Protocol = "TCP"
	}
	if v := q.Get("port"); v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			httpError(w, http.StatusBadRequest, "port %q: want 1..65535", v)
			return
		}
		req.Port = uint16(n)
	}
	pkt, err := s.packet(req)
	if errors.Is(err, errNotFound) {
		httpError(w, http.StatusNotFound, "%v", err)
		return
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	// A new connection: the one ct() of the pipeline's Conntrack table
	// resumes as trk,new (ConntrackCommit's ct(commit) does not
	// recirculate).
	text, err := s.Trace(ctx, pkt, "trk,new")
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v", err)
		return
	}
	tr, err := ParseTrace(text, openflow.TableNames())
	if err != nil {
		httpError(w, http.StatusBadGateway, "%v; OVS said:\n%s", err, text)
		return
	}
	if err := s.annotate(ctx, &tr); err != nil {
		httpError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(ctx, w, TraceResult{From: req.From, To: req.To, Protocol: req.Protocol, Port: req.Port, Packet: pkt, Trace: tr})
}

// annotate names the policy rules behind the steps in the agent's bridge
// and the output port.
func (s *Server) annotate(ctx context.Context, tr *Trace) error {
	ix, err := NewIndex(ctx, s.Datapath.Policies(), nil)
	if err != nil {
		return err
	}
	for i := range tr.Steps {
		if tr.Steps[i].Bridge == tr.Bridge {
			tr.Steps[i].Rule = stepRule(tr.Steps[i], ix)
		}
	}
	if tr.Verdict.Action == "output" {
		tr.Verdict.PortName = s.portName(tr.Verdict.Port)
	}
	if tr.Verdict.Action == "drop" && tr.Verdict.Reason == reasonDrops {
		last := tr.Steps[len(tr.Steps)-1]
		if r := last.Rule; r != nil && r.Via == "isolation" {
			pols := r.Policies
			if r.Policy != "" {
				pols = []string{r.Policy}
			}
			tr.Verdict.Reason = fmt.Sprintf("%s isolation: no %s rule of %s allows it", r.Direction,
				strings.ToLower(r.Direction), strings.Join(pols, ", "))
		}
	}
	return nil
}

func findPod(pods []interfacestore.PodInterface, f func(interfacestore.PodInterface) bool) (interfacestore.PodInterface, bool) {
	for _, p := range pods {
		if f(p) {
			return p, true
		}
	}
	return interfacestore.PodInterface{}, false
}

// stepRule finds the rule behind a step: its conj_id, its cookie (a rule's
// flow or counter) or, for a default drop, the policies isolating the pod.
func stepRule(st Step, ix *Index) *StepRule {
	ref := func(id uint32, via string) *StepRule {
		r, ok := ix.rules[id]
		if !ok {
			return nil
		}
		return &StepRule{Policy: r.Namespace + "/" + r.Name, Direction: r.Direction, Index: r.Index, Via: via}
	}
	if conj, ok := conjIDOf(st.Match); ok {
		return ref(conj, "conj_id")
	}
	id := uint32(st.Cookie & openflow.CookieIDMask)
	switch st.Cookie & openflow.CookieCategoryMask {
	case openflow.CookiePolicy:
		return ref(id, "cookie")
	case openflow.CookieMetric:
		kind, conj, ok := openflow.ParseMetricCookie(st.Cookie &^ openflow.CookieRoundMask)
		if !ok {
			return nil
		}
		via := "cookie"
		if kind == openflow.MetricEstablished {
			via = "ct_label"
		}
		return ref(conj, via)
	case openflow.CookieIsolate:
		dir := isolationDirection(st.Table)
		pols := ix.isolating[isolationKey{dir, id}]
		if dir == "" || len(pols) == 0 {
			return nil
		}
		r := &StepRule{Direction: dir, Index: -1, Via: "isolation"}
		if len(pols) == 1 {
			r.Policy = pols[0]
		} else {
			r.Policies = slices.Clone(pols)
		}
		return r
	}
	return nil
}

// conjIDOf returns the conj_id a match tests.
func conjIDOf(match string) (uint32, bool) {
	for _, f := range strings.Split(match, ",") {
		if v, ok := strings.CutPrefix(f, "conj_id="); ok {
			n, err := strconv.ParseUint(v, 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

// portName names a port of the bridge: a local pod, the gateway or the
// tunnel.
func (s *Server) portName(port uint32) string {
	if n := s.Datapath.Network(); n != nil {
		switch port {
		case n.GatewayPort:
			return "gateway"
		case n.TunnelPort:
			if port != 0 {
				return "tunnel"
			}
		}
	}
	if p, ok := findPod(s.Datapath.Pods(), func(p interfacestore.PodInterface) bool { return uint32(p.OFPort) == port }); ok {
		return "pod " + p.PodKey()
	}
	return ""
}

func writeJSON(ctx context.Context, w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		klog.FromContext(ctx).V(2).Info("Writing a debug API response failed", "err", err)
	}
}

func httpError(w http.ResponseWriter, code int, format string, a ...any) {
	http.Error(w, fmt.Sprintf(format, a...), code)
}

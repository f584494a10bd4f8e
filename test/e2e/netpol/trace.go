package netpol

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"palisade.dev/palisade/agent/interfacestore"
	aof "palisade.dev/palisade/agent/openflow"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/probe"
	"palisade.dev/palisade/test/ovsinstance"
)

// traceSourcePort is the source port of traced packets; traceTTL their
// TTL as they leave the source pod.
const (
	traceSourcePort = 40000
	traceTTL        = 64
)

// Tracer decides verdicts with `ovs-appctl ofproto/trace` on the nodes'
// own ovs-vswitchd: OVS's real classifier walks the first packet of a new
// connection (conntrack state trk|new) through the installed flows. It is
// how SCTP is verified in the lab, whose kernel cannot open SCTP sockets.
//
// A packet between pods of one node is traced once, from the source pod's
// port to the destination pod's port. A packet to another node is traced
// twice, as it travels: on the source node from the source pod's port
// (via the gateway's MAC, the pod's next hop off its subnet) to the tunnel
// port, then on the destination node from the tunnel port (outer source the
// source node's address) to the destination pod's port.
type Tracer struct {
	// OVS returns the Open vSwitch of a node ("node1").
	OVS func(node string) (*ovsinstance.Instance, error)

	mu    sync.Mutex
	ports map[string]ovsPort // by node + "/" + pod key + "@" + ip, or node + "/" + tunnel
}

// ovsPort is a pod's port on its node's bridge.
type ovsPort struct {
	OFPort int
	MAC    string
}

func (t *Tracer) cached(key string) (ovsPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.ports[key]
	return p, ok
}

func (t *Tracer) remember(key string, p ovsPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ports == nil {
		t.ports = map[string]ovsPort{}
	}
	t.ports[key] = p
}

// ofport reads an interface's OpenFlow port number.
func ofport(inst *ovsinstance.Instance, name string) (int, error) {
	out, err := inst.Vsctl("get", "Interface", name, "ofport")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("interface %s has no ofport (%q)", name, strings.TrimSpace(out))
	}
	return n, nil
}

// podPort finds pod's OVS port through the external IDs the agent writes.
func (t *Tracer) podPort(inst *ovsinstance.Instance, pod probe.Pod) (ovsPort, error) {
	key := pod.Node + "/" + pod.Key() + "@" + pod.IP
	if p, ok := t.cached(key); ok {
		return p, nil
	}
	out, err := inst.Vsctl("--format=json", "--columns=name,external_ids", "find", "Port",
		"external_ids:"+interfacestore.ExternalIDPodNamespace+"="+pod.Namespace,
		"external_ids:"+interfacestore.ExternalIDPodName+"="+pod.Name)
	if err != nil {
		return ovsPort{}, err
	}
	name, ids, err := parsePortRow(out)
	if err != nil {
		return ovsPort{}, fmt.Errorf("OVS port of %s on %s: %w", pod.Key(), pod.Node, err)
	}
	if ids[interfacestore.ExternalIDIP] != pod.IP {
		return ovsPort{}, fmt.Errorf("OVS port %s of %s has IP %q, the pod %s", name, pod.Key(), ids[interfacestore.ExternalIDIP], pod.IP)
	}
	n, err := ofport(inst, name)
	if err != nil {
		return ovsPort{}, err
	}
	p := ovsPort{OFPort: n, MAC: ids[interfacestore.ExternalIDMAC]}
	t.remember(key, p)
	return p, nil
}

// tunnelPort finds the node's tunnel port (a Geneve or VXLAN interface).
func (t *Tracer) tunnelPort(inst *ovsinstance.Instance, node string) (int, error) {
	key := node + "/tunnel"
	if p, ok := t.cached(key); ok {
		return p.OFPort, nil
	}
	for _, typ := range []string{"geneve", "vxlan"} {
		out, err := inst.Vsctl("--bare", "--columns=name", "find", "Interface", "type="+typ)
		if err != nil {
			return 0, err
		}
		if name := strings.TrimSpace(out); name != "" {
			n, err := ofport(inst, strings.Fields(name)[0])
			if err != nil {
				return 0, err
			}
			t.remember(key, ovsPort{OFPort: n})
			return n, nil
		}
	}
	return 0, fmt.Errorf("node %s has no tunnel port", node)
}

// parsePortRow reads the single row of `ovs-vsctl --format=json
// --columns=name,external_ids find Port ...`.
func parsePortRow(out string) (string, map[string]string, error) {
	var table struct {
		Data [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &table); err != nil {
		return "", nil, fmt.Errorf("parse ovs-vsctl output: %w", err)
	}
	if len(table.Data) != 1 || len(table.Data[0]) != 2 {
		return "", nil, fmt.Errorf("want exactly one port, ovs-vsctl found %d", len(table.Data))
	}
	var name string
	if err := json.Unmarshal(table.Data[0][0], &name); err != nil {
		return "", nil, fmt.Errorf("parse port name: %w", err)
	}
	// A map column is ["map", [[key, value], ...]].
	var m []json.RawMessage
	if err := json.Unmarshal(table.Data[0][1], &m); err != nil || len(m) != 2 {
		return "", nil, fmt.Errorf("parse external_ids of %s", name)
	}
	var pairs [][2]string
	if err := json.Unmarshal(m[1], &pairs); err != nil {
		return "", nil, fmt.Errorf("parse external_ids of %s: %w", name, err)
	}
	ids := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		ids[kv[0]] = kv[1]
	}
	return name, ids, nil
}

// hop is one trace: a packet entering node's bridge as flow, which is
// allowed if it leaves through OpenFlow port want.
type hop struct {
	node string
	inst *ovsinstance.Instance
	flow string
	want int
}

// hops describes how a new connection from -> to:port travels.
func (t *Tracer) hops(from, to probe.Pod, port int, proto string) ([]hop, error) {
	srcOVS, err := t.OVS(from.Node)
	if err != nil {
		return nil, err
	}
	src, err := t.podPort(srcOVS, from)
	if err != nil {
		return nil, err
	}
	dstOVS, err := t.OVS(to.Node)
	if err != nil {
		return nil, err
	}
	dst, err := t.podPort(dstOVS, to)
	if err != nil {
		return nil, err
	}
	l4 := strings.ToLower(proto)
	packet := func(dlDst string, ttl int) string {
		return fmt.Sprintf("%s,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=%d,%s_src=%d,%s_dst=%d",
			l4, src.MAC, dlDst, from.IP, to.IP, ttl, l4, traceSourcePort, l4, port)
	}
	if from.Node == to.Node {
		return []hop{{node: to.Node, inst: dstOVS, want: dst.OFPort,
			flow: fmt.Sprintf("in_port=%d,%s", src.OFPort, packet(dst.MAC, traceTTL))}}, nil
	}
	gwMAC, err := gatewayMAC(from.IP)
	if err != nil {
		return nil, err
	}
	srcTun, err := t.tunnelPort(srcOVS, from.Node)
	if err != nil {
		return nil, err
	}
	dstTun, err := t.tunnelPort(dstOVS, to.Node)
	if err != nil {
		return nil, err
	}
	srcIP, err := nodeIP(from.Node)
	if err != nil {
		return nil, err
	}
	dstIP, err := nodeIP(to.Node)
	if err != nil {
		return nil, err
	}
	return []hop{
		{node: from.Node, inst: srcOVS, want: srcTun,
			flow: fmt.Sprintf("in_port=%d,%s", src.OFPort, packet(gwMAC, traceTTL))},
		{node: to.Node, inst: dstOVS, want: dst.OFPort,
			flow: fmt.Sprintf("in_port=%d,tun_src=%s,tun_dst=%s,%s", dstTun, srcIP, dstIP, packet(gwMAC, traceTTL-1))},
	}, nil
}

// gatewayMAC is the MAC a pod sends packets for other nodes to: its
// gateway's, the first address of its node's pod CIDR.
func gatewayMAC(podIP string) (string, error) {
	ip, err := netip.ParseAddr(podIP)
	if err != nil {
		return "", err
	}
	p, err := ip.Prefix(layout.NodeCIDRMaskSize)
	if err != nil {
		return "", err
	}
	return aof.GatewayMAC(p.Addr().Next()).String(), nil
}

func nodeIP(node string) (netip.Addr, error) {
	i, err := layout.NodeIndex(node)
	if err != nil {
		return netip.Addr{}, err
	}
	return layout.NodeIP(i), nil
}

func (h hop) trace() (string, Trace, error) {
	out, err := h.inst.Appctl("ofproto/trace", h.inst.Bridge, h.flow)
	if err != nil {
		return "", Trace{}, fmt.Errorf("ofproto/trace %s on %s: %w", h.flow, h.node, err)
	}
	tr, err := ParseTrace(out)
	if err != nil {
		return "", Trace{}, fmt.Errorf("ofproto/trace %s on %s: %w", h.flow, h.node, err)
	}
	return "ovs-appctl ofproto/trace " + h.inst.Bridge + " " + h.flow + " (on " + h.node + ")\n" + out, tr, nil
}

// Verdict traces the first packet of a new connection from -> to:port on
// every node it crosses; it is allowed if no node drops it.
func (t *Tracer) Verdict(ctx context.Context, from, to probe.Pod, port int, proto string) (allowed bool, detail string, err error) {
	if err := ctx.Err(); err != nil {
		return false, "", err
	}
	hops, err := t.hops(from, to, port, proto)
	if err != nil {
		return false, "", err
	}
	var details []string
	for _, h := range hops {
		_, tr, err := h.trace()
		if err != nil {
			return false, "", err
		}
		details = append(details, "ofproto/trace on "+h.node+": datapath actions "+tr.DatapathActions)
		if !tr.Delivers(h.want) {
			return false, strings.Join(details, "; "), nil
		}
	}
	return true, strings.Join(details, "; "), nil
}

// Explain returns the traces of a new connection from -> to:port, to show
// why a pair got its verdict.
func (t *Tracer) Explain(ctx context.Context, from, to probe.Pod, port int, proto string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	hops, err := t.hops(from, to, port, proto)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, h := range hops {
		out, _, err := h.trace()
		if err != nil {
			return "", err
		}
		b.WriteString(out)
	}
	return b.String(), nil
}

// Datapath returns the conntrack entries of node that mention both
// addresses, and all its datapath flows: what real packets hit, which a
// trace of a new connection does not show.
func (t *Tracer) Datapath(node, ipA, ipB string) (string, error) {
	inst, err := t.OVS(node)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, cmd := range []string{"dpctl/dump-conntrack", "dpctl/dump-flows"} {
		out, err := inst.Appctl(cmd)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "ovs-appctl %s:\n", cmd)
		for _, line := range strings.Split(out, "\n") {
			if cmd == "dpctl/dump-flows" || strings.Contains(line, "="+ipA+",") && strings.Contains(line, "="+ipB+",") {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String(), nil
}

// Warnings returns the warning and error lines of node's ovs-vswitchd log.
func (t *Tracer) Warnings(node string) (string, error) {
	inst, err := t.OVS(node)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(inst.Dir, "vswitchd.log"))
	if err != nil {
		return "", err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "|WARN|") || strings.Contains(line, "|ERR|") || strings.Contains(line, "|EMER|") {
			out = append(out, line)
		}
	}
	if len(out) > 30 {
		out = out[len(out)-30:]
	}
	return strings.Join(out, "\n"), nil
}

// Flows returns every flow of node's bridge (ovs-ofctl --names
// --no-stats dump-flows), for failure reports.
func (t *Tracer) Flows(node string) (string, error) {
	inst, err := t.OVS(node)
	if err != nil {
		return "", err
	}
	flows, err := inst.DumpFlows(inst.Bridge)
	if err != nil {
		return "", err
	}
	return strings.Join(flows, "\n"), nil
}

// Trace is what a trace says about a packet.
type Trace struct {
	// DatapathActions is the last "Datapath actions:" line: what the
	// packet finally does, after every conntrack recirculation.
	DatapathActions string
	// OutputPorts are the OpenFlow ports of every "output port is N" of the
	// last recirculation.
	OutputPorts []int
}

var outputPortRE = regexp.MustCompile(`-> output port is (\d+)`)

// ParseTrace reads `ovs-appctl ofproto/trace` output.
func ParseTrace(out string) (Trace, error) {
	var tr Trace
	// Each recirculation starts a new section; only the last decides.
	sections := strings.Split(out, "\nrecirc(")
	last := sections[len(sections)-1]
	found := false
	for _, line := range strings.Split(out, "\n") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "Datapath actions:"); ok {
			tr.DatapathActions = strings.TrimSpace(a)
			found = true
		}
	}
	if !found {
		return tr, fmt.Errorf("no datapath actions in trace:\n%s", out)
	}
	for _, m := range outputPortRE.FindAllStringSubmatch(last, -1) {
		n, _ := strconv.Atoi(m[1])
		tr.OutputPorts = append(tr.OutputPorts, n)
	}
	return tr, nil
}

// Delivers reports whether the packet leaves through OpenFlow port ofport
// and is not dropped.
func (tr Trace) Delivers(ofport int) bool {
	if tr.DatapathActions == "" || tr.DatapathActions == "drop" {
		return false
	}
	for _, p := range tr.OutputPorts {
		if p == ofport {
			return true
		}
	}
	return false
}

package debug

import (
	"bufio"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Trace is `ovs-appctl ofproto/trace` output, parsed.
type Trace struct {
	// Flow is the packet traced, as OVS read it (ovs-ofctl syntax).
	Flow string `json:"flow"`
	// Steps are the flows the packet matched, table by table, through
	// every conntrack recirculation.
	Steps []Step `json:"steps"`
	// Recirculations are the headers of the passes after a ct()
	// recirculation, e.g. "recirc(0x1) - resume conntrack with
	// ct_state=new|trk".
	Recirculations []string `json:"recirculations,omitempty"`
	// DatapathActions is what the datapath would do in the last pass.
	DatapathActions string  `json:"datapathActions"`
	Verdict         Verdict `json:"verdict"`
	// Bridge is the bridge traced (the agent's); steps in other bridges
	// (reached through patch ports) name it in their Bridge.
	Bridge string `json:"bridge,omitempty"`
}

// Step is one flow the packet matched.
type Step struct {
	// Pass is 0 before the first ct() recirculation, then 1, 2, ...
	Pass int `json:"pass"`
	// Bridge is the bridge of the step's table; only the traced bridge's
	// tables are named.
	Bridge    string `json:"bridge,omitempty"`
	Table     uint8  `json:"table"`
	TableName string `json:"tableName,omitempty"`
	// Match is the matched flow's match ("" for a flow that matches
	// everything); NoMatch says no flow matched (the table's miss drops).
	Match    string `json:"match"`
	NoMatch  bool   `json:"noMatch,omitempty"`
	Priority uint16 `json:"priority"`
	Cookie   uint64 `json:"cookie"`
	// Actions are the flow's actions as OVS executed them, one per line.
	Actions []string `json:"actions"`
	// Notes are OVS's remarks on them ("output port is 4"), including its
	// warnings (the ">>" lines: "Not tunneling to our own address").
	Notes []string `json:"notes,omitempty"`
	// Rule is the policy rule behind the step, when there is one.
	Rule *StepRule `json:"rule,omitempty"`
}

// StepRule names the policy rule or default drop behind a step.
type StepRule struct {
	// Policy is "namespace/name"; empty for a default drop shared by
	// several policies (then Policies lists them).
	Policy    string   `json:"policy,omitempty"`
	Policies  []string `json:"policies,omitempty"`
	Direction string   `json:"direction"`
	// Index is the rule's position in the policy; -1 for a default drop.
	Index int `json:"index"`
	// Via says how the rule was found: "conj_id", "cookie", "ct_label"
	// (a metric flow's cookie names the rule a connection was allowed by)
	// or "isolation" (a default drop of an isolated pod).
	Via string `json:"via"`
}

// Verdict is the trace's outcome.
type Verdict struct {
	// Action is "output" if the last pass's datapath actions send the
	// packet to a port, otherwise "drop".
	Action string `json:"action"`
	// Port is the output port (Action output).
	Port     uint32 `json:"port,omitempty"`
	PortName string `json:"portName,omitempty"`
	// Table is where the packet was output or dropped.
	Table     uint8  `json:"table"`
	TableName string `json:"tableName,omitempty"`
	// Reason explains a drop in words; OVS's warnings of the last pass,
	// if it gave any, prefixed "OVS: ".
	Reason string `json:"reason,omitempty"`
	// Note qualifies an output the trace itself could not show (see
	// traceTunnelArtifact).
	Note string `json:"note,omitempty"`
}

var (
	stepLine    = regexp.MustCompile(`^(\s*)(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$`)
	noMatchLine = regexp.MustCompile(`^(\s*)(\d+)\. No match\.?$`)
	bridgeLine  = regexp.MustCompile(`^(\s*)bridge\("([^"]*)"\)$`)
	outputNote  = regexp.MustCompile(`^output port is (\d+)$`)
)

// Reasons of a drop without OVS warnings.
const (
	reasonMiss    = "no flow matched (table miss)"
	reasonDrops   = "the matched flow drops"
	reasonNowhere = "the last flow's actions forward the packet nowhere"
)

// notTunnelingToOwn is OVS's warning when an output to a tunnel would send
// the packet to the tunnel destination it arrived with.
const notTunnelingToOwn = "Not tunneling to our own address"

// traceTunnelArtifact explains notTunnelingToOwn for a packet that did not
// come from a tunnel: ofproto/trace resumes after ct() with the last
// pass's final flow, whose tun_dst L3Forwarding set before ct(), and OVS
// takes that for the packet's arrival tunnel. The datapath resumes the
// packet with no tunnel metadata, so real packets are tunneled.
const traceTunnelArtifact = "(an ofproto/trace artifact: the pass after ct() starts with the tun_dst set before it, " +
	"which OVS takes for the tunnel the packet came in on; the datapath itself does tunnel such packets)"

// depth is how deep a line of ofproto/trace is nested. OVS indents a
// nested trace (a patch port into another bridge, a resubmit) by four
// spaces for its header and eight for its tables, unless it is the last
// thing its parent does: then it continues at the parent's level (so does
// goto_table). Table numbers are right-aligned in two columns.
func depth(indent string) int { return len(indent) / 4 }

// ParseTrace parses the text of `ovs-appctl ofproto/trace`, naming the
// tables of the traced bridge (the first bridge(...) at the top level)
// with names (ID -> name; a missing name leaves TableName empty). It is a
// pure function of its input.
func ParseTrace(text string, names map[uint8]string) (Trace, error) {
	var tr Trace
	pass := 0
	// owners are the indexes in tr.Steps of the steps open at each depth
	// (-1: none): a step's actions and notes are one level deeper.
	var owners []int
	// bridges are the bridges entered, by depth: a bridge(...) line at
	// the top level starts a pass or is a patch port's peer traced as
	// the last thing of a table, an indented one a peer traced before
	// more actions. warnings are OVS's ">>" lines of the current pass.
	var bridges, warnings []string
	addStep := func(indent, table string) *Step {
		t, _ := strconv.ParseUint(table, 10, 8)
		st := Step{Pass: pass, Table: uint8(t), Bridge: tr.Bridge, Actions: []string{}}
		d := depth(indent)
		// A step is in the bridge entered last at its depth or above
		// (a resubmit nests within its bridge); deeper ones are left.
		if len(bridges) > 0 {
			b := min(d, len(bridges)-1)
			st.Bridge, bridges = bridges[b], bridges[:b+1]
		}
		if st.Bridge == tr.Bridge {
			st.TableName = names[st.Table]
		}
		tr.Steps = append(tr.Steps, st)
		for len(owners) < d {
			owners = append(owners, -1)
		}
		owners = append(owners[:d], len(tr.Steps)-1)
		return &tr.Steps[len(tr.Steps)-1]
	}
	// owner is the step a line at indent belongs to, nil if none.
	owner := func(indent int) *Step {
		if d := indent/4 - 1; d >= 0 && d < len(owners) && owners[d] >= 0 {
			return &tr.Steps[owners[d]]
		}
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case trimmed == "":
		case strings.HasPrefix(line, "Flow: "):
			if tr.Flow == "" {
				tr.Flow = strings.TrimPrefix(line, "Flow: ")
			}
			owners = nil
		case strings.HasPrefix(line, "Datapath actions: "):
			tr.DatapathActions = strings.TrimPrefix(line, "Datapath actions: ")
			owners = nil
		case bridgeLine.MatchString(line):
			m := bridgeLine.FindStringSubmatch(line)
			d := depth(m[1])
			if tr.Bridge == "" && d == 0 {
				tr.Bridge = m[2]
			}
			if d <= len(bridges) {
				bridges = append(bridges[:d], m[2])
			}
		case strings.HasPrefix(line, "Final flow: "), strings.HasPrefix(line, "Megaflow: "),
			strings.HasPrefix(trimmed, "---"), strings.HasPrefix(trimmed, "==="):
			if indent == 0 {
				owners = nil
			}
		case strings.HasPrefix(line, "recirc("):
			tr.Recirculations = append(tr.Recirculations, line)
			pass++
			warnings, owners = nil, nil
		case stepLine.MatchString(line):
			m := stepLine.FindStringSubmatch(line)
			st := addStep(m[1], m[2])
			prio, _ := strconv.ParseUint(m[4], 10, 16)
			st.Match, st.Priority = m[3], uint16(prio)
			if m[5] != "" {
				st.Cookie, _ = strconv.ParseUint(strings.TrimPrefix(m[5], "0x"), 16, 64)
			}
		case noMatchLine.MatchString(line):
			m := noMatchLine.FindStringSubmatch(line)
			addStep(m[1], m[2]).NoMatch = true
		case strings.HasPrefix(trimmed, ">>"):
			warnings = append(warnings, strings.TrimSpace(trimmed[2:]))
			if st := owner(indent); st != nil {
				st.Notes = append(st.Notes, strings.TrimSpace(trimmed[2:]))
			}
		case strings.HasPrefix(trimmed, "->"):
			if st := owner(indent); st != nil {
				st.Notes = append(st.Notes, strings.TrimSpace(trimmed[2:]))
			}
		default:
			if st := owner(indent); st != nil {
				st.Actions = append(st.Actions, trimmed)
			}
		}
		// Other lines ("thaw", "Resuming from table 4") belong to no
		// step.
	}
	if err := sc.Err(); err != nil {
		return Trace{}, fmt.Errorf("reading the trace: %w", err)
	}
	if tr.Flow == "" || len(tr.Steps) == 0 {
		return Trace{}, errors.New("not ofproto/trace output: no flow or no table steps")
	}
	tr.Verdict = verdict(tr, warnings)
	return tr, nil
}

// verdict is the outcome of the last pass. Only the datapath actions say
// whether OVS sends the packet: an action may output nothing (OVS then
// warns why). The output port is the one the traced bridge's last
// output step names; a drop happens at the last step, for OVS's reason
// (warnings) if it gave one.
func verdict(tr Trace, warnings []string) Verdict {
	last := tr.Steps[len(tr.Steps)-1]
	if outputs(tr.DatapathActions) {
		return outputVerdict(tr)
	}
	if slices.Contains(warnings, notTunnelingToOwn) && !strings.Contains(tr.Flow, "tun_dst=") {
		// The pipeline sent the packet to the tunnel; only the trace
		// could not follow it there.
		v := outputVerdict(tr)
		v.Note = "OVS: " + notTunnelingToOwn + " " + traceTunnelArtifact
		return v
	}
	v := Verdict{Action: "drop", Table: last.Table, TableName: last.TableName}
	switch {
	case len(warnings) > 0:
		v.Reason = "OVS: " + strings.Join(warnings, "; ")
	case last.NoMatch:
		v.Reason = reasonMiss
	case len(last.Actions) == 0 || len(last.Actions) == 1 && last.Actions[0] == "drop":
		v.Reason = reasonDrops
	default:
		v.Reason = reasonNowhere
	}
	return v
}

// outputVerdict is an output verdict for the port the traced bridge's last
// output step of the last pass names.
func outputVerdict(tr Trace) Verdict {
	last := tr.Steps[len(tr.Steps)-1]
	for i := len(tr.Steps) - 1; i >= 0 && tr.Steps[i].Pass == last.Pass; i-- {
		s := tr.Steps[i]
		if s.Bridge != tr.Bridge {
			continue
		}
		for _, n := range s.Notes {
			if m := outputNote.FindStringSubmatch(n); m != nil {
				port, _ := strconv.ParseUint(m[1], 10, 32)
				return Verdict{Action: "output", Port: uint32(port), Table: s.Table, TableName: s.TableName}
			}
		}
	}
	return Verdict{Action: "output", Table: last.Table, TableName: last.TableName}
}

// outputs reports whether datapath actions (`ovs-appctl` syntax, ports by
// number) send the packet out of a port: a port number, a tunnel push or
// a bond output, also inside clone(...).
func outputs(actions string) bool {
	for _, a := range splitActions(actions) {
		switch {
		case a != "" && strings.Trim(a, "0123456789") == "":
			return true
		case strings.HasPrefix(a, "tnl_push("), strings.HasPrefix(a, "lb_output("):
			return true
		case strings.HasPrefix(a, "clone(") && strings.HasSuffix(a, ")"):
			if outputs(a[len("clone(") : len(a)-1]) {
				return true
			}
		}
	}
	return false
}

// splitActions splits datapath actions at their top-level commas.
func splitActions(s string) []string {
	var out []string
	level, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			level++
		case ')':
			level--
		case ',':
			if level == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

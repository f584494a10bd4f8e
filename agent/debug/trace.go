package debug

import (
	"bufio"
	"errors"
	"fmt"
	"regexp"
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
}

// Step is one flow the packet matched.
type Step struct {
	// Pass is 0 before the first ct() recirculation, then 1, 2, ...
	Pass      int    `json:"pass"`
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
	// Notes are OVS's remarks on them ("output port is 4").
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
	// Action is "output" or "drop".
	Action string `json:"action"`
	// Port is the output port (Action output).
	Port     uint32 `json:"port,omitempty"`
	PortName string `json:"portName,omitempty"`
	// Table is where the packet was output or dropped.
	Table     uint8  `json:"table"`
	TableName string `json:"tableName,omitempty"`
	// Reason explains a drop in words.
	Reason string `json:"reason,omitempty"`
}

var (
	stepLine    = regexp.MustCompile(`^\s*(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$`)
	noMatchLine = regexp.MustCompile(`^\s*(\d+)\. No match\.?$`)
	outputNote  = regexp.MustCompile(`^output port is (\d+)$`)
)

// ParseTrace parses the text of `ovs-appctl ofproto/trace`, naming tables
// with names (ID -> name; a missing name leaves TableName empty). It is a
// pure function of its input.
func ParseTrace(text string, names map[uint8]string) (Trace, error) {
	var tr Trace
	pass := 0
	var cur *Step
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			cur = nil
		case strings.HasPrefix(line, "Flow: "):
			if tr.Flow == "" {
				tr.Flow = strings.TrimPrefix(line, "Flow: ")
			}
			cur = nil
		case strings.HasPrefix(line, "Datapath actions: "):
			tr.DatapathActions = strings.TrimPrefix(line, "Datapath actions: ")
			cur = nil
		case strings.HasPrefix(line, "Final flow: "), strings.HasPrefix(line, "Megaflow: "),
			strings.HasPrefix(line, "bridge("), strings.HasPrefix(trimmed, "---"), strings.HasPrefix(trimmed, "==="):
			cur = nil
		case strings.HasPrefix(line, "recirc("):
			tr.Recirculations = append(tr.Recirculations, line)
			pass++
			cur = nil
		case stepLine.MatchString(line):
			m := stepLine.FindStringSubmatch(line)
			table, _ := strconv.ParseUint(m[1], 10, 8)
			prio, _ := strconv.ParseUint(m[3], 10, 16)
			var cookie uint64
			if m[4] != "" {
				cookie, _ = strconv.ParseUint(strings.TrimPrefix(m[4], "0x"), 16, 64)
			}
			tr.Steps = append(tr.Steps, Step{Pass: pass, Table: uint8(table), TableName: names[uint8(table)],
				Match: m[2], Priority: uint16(prio), Cookie: cookie, Actions: []string{}})
			cur = &tr.Steps[len(tr.Steps)-1]
		case noMatchLine.MatchString(line):
			m := noMatchLine.FindStringSubmatch(line)
			table, _ := strconv.ParseUint(m[1], 10, 8)
			tr.Steps = append(tr.Steps, Step{Pass: pass, Table: uint8(table), TableName: names[uint8(table)],
				NoMatch: true, Actions: []string{}})
			cur = &tr.Steps[len(tr.Steps)-1]
		case cur != nil && (strings.HasPrefix(trimmed, "->") || strings.HasPrefix(trimmed, ">>")):
			cur.Notes = append(cur.Notes, strings.TrimSpace(trimmed[2:]))
		case cur != nil:
			cur.Actions = append(cur.Actions, trimmed)
		}
		// Other lines ("thaw", "Resuming from table 4") carry nothing a
		// step needs.
	}
	if err := sc.Err(); err != nil {
		return Trace{}, fmt.Errorf("reading the trace: %w", err)
	}
	if tr.Flow == "" || len(tr.Steps) == 0 {
		return Trace{}, errors.New("not ofproto/trace output: no flow or no table steps")
	}
	tr.Verdict = verdict(tr, names)
	return tr, nil
}

// verdict is the outcome of the last pass: output if a step of it output
// the packet, otherwise a drop at its last step.
func verdict(tr Trace, names map[uint8]string) Verdict {
	last := tr.Steps[len(tr.Steps)-1]
	lastPass := last.Pass
	for i := len(tr.Steps) - 1; i >= 0 && tr.Steps[i].Pass == lastPass; i-- {
		s := tr.Steps[i]
		for _, n := range s.Notes {
			if m := outputNote.FindStringSubmatch(n); m != nil {
				port, _ := strconv.ParseUint(m[1], 10, 32)
				return Verdict{Action: "output", Port: uint32(port), Table: s.Table, TableName: names[s.Table]}
			}
		}
	}
	v := Verdict{Action: "drop", Table: last.Table, TableName: names[last.Table]}
	switch {
	case last.NoMatch:
		v.Reason = "no flow matched (table miss)"
	case len(last.Actions) == 0 || len(last.Actions) == 1 && last.Actions[0] == "drop":
		v.Reason = "the matched flow drops"
	default:
		v.Reason = "the last flow's actions forward the packet nowhere"
	}
	return v
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"palisade.dev/palisade/controller/apis/controlplane"
)

const explainSummary = "Explain whether the model allows a connection between two pods, and which rules decide it."

func init() {
	register(command{name: "explain", summary: explainSummary, run: runExplain})
}

func runExplain(args []string, out io.Writer) error {
	fs := flagSet("explain --from NS/POD --to NS/POD --port N [--protocol TCP|UDP|SCTP]", explainSummary, out)
	o := outputFlag(fs, "table")
	kubeconfig := kubeconfigFlag(fs)
	from := fs.String("from", "", "Source pod, NAMESPACE/POD.")
	to := fs.String("to", "", "Destination pod, NAMESPACE/POD.")
	port := fs.Int("port", 0, "Destination port.")
	protocol := fs.String("protocol", "TCP", "Protocol: TCP, UDP or SCTP.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q: use --from, --to and --port", fs.Args())
	}
	var errs []error
	for _, p := range []struct{ flag, value string }{{"--from", *from}, {"--to", *to}} {
		if p.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", p.flag))
		} else if _, err := parsePodRef(p.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.flag, err))
		}
	}
	if *port < 1 || *port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not in 1-65535", *port))
	}
	proto := strings.ToUpper(*protocol)
	switch controlplane.Protocol(proto) {
	case controlplane.ProtocolTCP, controlplane.ProtocolUDP, controlplane.ProtocolSCTP:
	default:
		errs = append(errs, fmt.Errorf("--protocol %q: want TCP, UDP or SCTP", *protocol))
	}
	errs = append(errs, checkFormat(*o))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c, err := newAPIClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var e controlplane.Explanation
	params := url.Values{"from": {*from}, "to": {*to}, "port": {strconv.Itoa(*port)}, "protocol": {proto}}
	if err := c.get(ctx, controlplane.ResourceExplanations, params, &e); err != nil {
		return err
	}
	return printExplanation(out, *o, &e)
}

// printExplanation prints the verdict, then one row per side: the
// source's egress and the destination's ingress.
func printExplanation(out io.Writer, format string, e *controlplane.Explanation) error {
	if format == "table" || format == "wide" {
		fmt.Fprintf(out, "%s: %s (%s) -> %s (%s) %s/%d\n", e.Verdict, e.From, e.FromIP, e.To, e.ToIP, e.Protocol, e.Port)
	}
	return print(out, format, e, func() table {
		t := table{Headers: []string{"SIDE", "POD", "ISOLATED-BY", "RESULT", "ALLOWING-RULES", "RULE-DETAILS"}, Narrow: 5}
		t.Rows = append(t.Rows, sideRow("egress", e.From, e.Egress), sideRow("ingress", e.To, e.Ingress))
		return t
	})
}

func sideRow(side string, pod controlplane.PodReference, d controlplane.DirectionExplanation) []string {
	if !d.Isolated {
		return []string{side, pod.String(), "-", "allowed (not isolated)", "-", "-"}
	}
	var isolating, rules, details []string
	for _, p := range d.IsolatingPolicies {
		isolating = append(isolating, sourceOf(p))
	}
	for _, r := range d.AllowingRules {
		rules = append(rules, fmt.Sprintf("%s#%d", sourceOf(r.Policy), r.Index))
		details = append(details, fmt.Sprintf("%s#%d:%s", sourceOf(r.Policy), r.Index, ruleString(r.Rule)))
	}
	result := "denied (no rule allows)"
	if d.Allowed {
		result = "allowed"
	}
	return []string{side, pod.String(), strings.Join(isolating, ","), result, orDash(strings.Join(rules, ",")), orDash(strings.Join(details, " "))}
}

// ruleString is a short form of a rule: its peers and services.
func ruleString(r controlplane.Rule) string {
	peer, word := r.From, "from"
	if r.Direction == controlplane.DirectionOut {
		peer, word = r.To, "to"
	}
	var peers []string
	peers = append(peers, peer.AddressGroups...)
	for _, b := range peer.IPBlocks {
		s := b.CIDR
		if len(b.Except) > 0 {
			s += " except " + strings.Join(b.Except, ",")
		}
		peers = append(peers, s)
	}
	if len(peers) == 0 {
		peers = []string{"any"}
	}
	var svcs []string
	for _, s := range r.Services {
		p := string(s.Protocol)
		if s.Port != "" {
			p += "/" + s.Port
			if s.EndPort > 0 {
				p += "-" + strconv.Itoa(int(s.EndPort))
			}
		}
		svcs = append(svcs, p)
	}
	if len(svcs) == 0 {
		svcs = []string{"any port"}
	}
	return fmt.Sprintf("%s[%s] ports[%s]", word, strings.Join(peers, ";"), strings.Join(svcs, ";"))
}

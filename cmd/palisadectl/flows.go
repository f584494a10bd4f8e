package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"palisade.dev/palisade/agent/debug"
)

// defaultAgentAddress is the agent's default --api-bind-address: these
// commands run on the node (in the agent's pod, or its network namespace).
const defaultAgentAddress = "127.0.0.1:10350"

// getResources are what `palisadectl get RESOURCE` can list, by name.
var getResources = map[string]func(args []string, out io.Writer) error{}

func init() {
	getResources["flows"] = getFlows
	register(command{name: "get", summary: "List resources (flows: the OVS flows of the node's policies).", run: runGet})
}

// runGet dispatches `get RESOURCE`.
func runGet(args []string, out io.Writer) error {
	names := make([]string, 0, len(getResources))
	for n := range getResources {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(out, "Usage: palisadectl get RESOURCE [flags]\n\nResources: %s\n", strings.Join(names, ", "))
			return pflag.ErrHelp
		}
		return fmt.Errorf("which resource? one of: %s", strings.Join(names, ", "))
	}
	f, ok := getResources[args[0]]
	if !ok {
		return fmt.Errorf("unknown resource %q: one of %s", args[0], strings.Join(names, ", "))
	}
	return f(args[1:], out)
}

// agentFlag registers --agent-address.
func agentFlag(fs *pflag.FlagSet) *string {
	return fs.String("agent-address", defaultAgentAddress, "host:port of the node's agent API (its --api-bind-address).")
}

// agentGet fetches path?query from the agent's API and decodes its JSON
// reply into v; an error status is an error carrying the agent's message.
func agentGet(ctx context.Context, address, path string, query url.Values, v any) error {
	u := url.URL{Scheme: "http", Host: address, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reaching the agent at %s (run this on the node, or set --agent-address): %w", address, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the agent's reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decoding the agent's reply: %w", err)
	}
	return nil
}

const flowsSummary = "List the OVS flows that realize a policy on this node (all policies with their flow counts without --policy)."

func getFlows(args []string, out io.Writer) error {
	fs := flagSet("get flows", flowsSummary, out)
	o := outputFlag(fs, "table")
	addr := agentFlag(fs)
	policy := fs.String("policy", "", "NAMESPACE/NAME of the policy.")
	direction := fs.String("direction", "", "Only the flows of this direction: Ingress or Egress.")
	rule := fs.Int("rule", -1, "Only the flows of the rule at this index (0, 1, ...) of --direction.")
	timeout := fs.Duration("timeout", 30*time.Second, "How long to wait for the agent.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *policy == "" && (*direction != "" || *rule >= 0) {
		return fmt.Errorf("--direction and --rule need --policy")
	}
	if *rule >= 0 && *direction == "" {
		return fmt.Errorf("--rule needs --direction: rule indexes count per direction")
	}
	if err := checkFormat(*o); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *policy == "" {
		var list []debug.PolicySummary
		if err := agentGet(ctx, *addr, debug.FlowsPath, nil, &list); err != nil {
			return err
		}
		return print(out, *o, list, func() table { return summaryTable(list) })
	}
	q := url.Values{"policy": {*policy}}
	if *direction != "" {
		q.Set("direction", *direction)
	}
	if *rule >= 0 {
		q.Set("rule", strconv.Itoa(*rule))
	}
	var pf debug.PolicyFlows
	if err := agentGet(ctx, *addr, debug.FlowsPath, q, &pf); err != nil {
		return err
	}
	return print(out, *o, pf, func() table { return flowsTable(pf) })
}

func summaryTable(list []debug.PolicySummary) table {
	t := table{Headers: []string{"POLICY", "RULES", "FLOWS", "SHARED", "TARGETS"}}
	for _, s := range list {
		t.Rows = append(t.Rows, []string{s.Policy, strconv.Itoa(s.Rules), strconv.Itoa(s.Flows),
			strconv.Itoa(s.Shared), strings.Join(s.Targets, ",")})
	}
	return t
}

// flowRule names a flow's rule ("Ingress/0") or isolation ("Ingress/-").
func flowRule(f debug.Flow) string {
	if f.Rule < 0 {
		return f.Direction + "/-"
	}
	return f.Direction + "/" + strconv.Itoa(f.Rule)
}

func flowsTable(pf debug.PolicyFlows) table {
	t := table{
		Headers: []string{"TABLE", "KIND", "RULE", "PRIORITY", "MATCH", "ACTIONS", "PACKETS", "BYTES", "COOKIE", "SHARED-WITH"},
		Narrow:  7,
	}
	for _, f := range pf.Flows {
		actions := f.Actions
		if actions == "" {
			actions = "?"
		}
		match := f.Match
		if match == "" {
			match = "*"
		}
		t.Rows = append(t.Rows, []string{f.TableName, f.Kind, flowRule(f), strconv.Itoa(int(f.Priority)), match, actions,
			strconv.FormatUint(f.Packets, 10), strconv.FormatUint(f.Bytes, 10), fmt.Sprintf("0x%x", f.Cookie),
			strings.Join(f.SharedWith, ",")})
	}
	return t
}

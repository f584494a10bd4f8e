package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"palisade.dev/palisade/agent/debug"
)

const traceSummary = "Trace a new connection from a pod on this node through its OVS pipeline (ofproto/trace)."

func init() {
	register(command{name: "trace", summary: traceSummary, run: runTrace})
}

func runTrace(args []string, out io.Writer) error {
	fs := flagSet("trace", traceSummary, out)
	o := outputFlag(fs, "table")
	addr := agentFlag(fs)
	from := fs.String("from", "", "NAMESPACE/POD: the source, a pod on this node.")
	to := fs.String("to", "", "NAMESPACE/POD or IPv4 address: the destination. A pod on another node needs a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config) to find its IP.")
	protocol := fs.String("protocol", "TCP", "TCP, UDP, SCTP or ICMP.")
	port := fs.Uint16("port", 0, "Destination port (not for ICMP).")
	kubeconfig := kubeconfigFlag(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "How long to wait for the agent and the Kubernetes API.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *from == "" || *to == "" {
		return fmt.Errorf("--from and --to are required")
	}
	if err := checkFormat(*o); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dest := *to
	if _, err := netip.ParseAddr(dest); err != nil && haveKubeconfig(*kubeconfig) {
		ip, err := podIP(ctx, *kubeconfig, dest)
		if err != nil {
			return err
		}
		dest = ip
	}
	q := url.Values{"from": {*from}, "to": {dest}, "protocol": {strings.ToUpper(*protocol)}}
	if *port != 0 {
		q.Set("port", strconv.Itoa(int(*port)))
	}
	var res debug.TraceResult
	if err := agentGet(ctx, *addr, debug.TracePath, q, &res); err != nil {
		return err
	}
	if dest != *to {
		res.To = *to + " (" + dest + ")"
	}
	if *o == "table" || *o == "wide" {
		return printTrace(out, *o, res)
	}
	return print(out, *o, res, nil)
}

// homeKubeconfig is kubectl's default kubeconfig (a variable for tests).
var homeKubeconfig = clientcmd.RecommendedHomeFile

// haveKubeconfig tells whether there is a kubeconfig to look a pod up
// with: --kubeconfig, $KUBECONFIG or ~/.kube/config. Without one (e.g. in
// the agent's pod) the agent resolves the pods of its node.
func haveKubeconfig(path string) bool {
	if path != "" || os.Getenv(clientcmd.RecommendedConfigPathEnvVar) != "" {
		return true
	}
	_, err := os.Stat(homeKubeconfig)
	return err == nil
}

// podIP looks up "namespace/name"'s IP in the Kubernetes API.
func podIP(ctx context.Context, kubeconfig, key string) (string, error) {
	ref, err := parsePodRef(key)
	if err != nil {
		return "", fmt.Errorf("--to %q: want NAMESPACE/POD or an IPv4 address", key)
	}
	ns, name := ref.Namespace, ref.Name
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return "", err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	pod, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("looking up pod %s: %w", key, err)
	}
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", key)
	}
	return pod.Status.PodIP, nil
}

// stepRule renders the rule behind a trace step.
func stepRule(r *debug.StepRule) string {
	if r == nil {
		return ""
	}
	if r.Index < 0 {
		pols := r.Policies
		if r.Policy != "" {
			pols = []string{r.Policy}
		}
		return fmt.Sprintf("%s isolation (%s)", r.Direction, strings.Join(pols, ","))
	}
	return fmt.Sprintf("%s %s/%d (%s)", r.Policy, r.Direction, r.Index, r.Via)
}

// verdictText renders a trace's verdict in one line.
func verdictText(v debug.Verdict) string {
	if v.Action == "output" {
		s := fmt.Sprintf("output to port %d", v.Port)
		if v.PortName != "" {
			s += " (" + v.PortName + ")"
		}
		s += " in table " + v.TableName
		if v.Note != "" {
			s += " (" + v.Note + ")"
		}
		return s
	}
	return fmt.Sprintf("drop in table %s: %s", v.TableName, v.Reason)
}

// printTrace writes the trace as a header, one row per step, and the
// verdict; -o wide adds each step's cookie and OVS's notes.
func printTrace(out io.Writer, format string, res debug.TraceResult) error {
	port := ""
	if res.Port != 0 {
		port = ":" + strconv.Itoa(int(res.Port))
	}
	fmt.Fprintf(out, "Trace %s -> %s %s%s\nPacket: %s\n\n", res.From, res.To, res.Protocol, port, res.Packet)
	t := table{Headers: []string{"PASS", "TABLE", "PRIORITY", "MATCH", "ACTIONS", "RULE", "COOKIE", "NOTES"}, Narrow: 6}
	for _, s := range res.Steps {
		match := s.Match
		switch {
		case s.NoMatch:
			match = "(no match)"
		case match == "":
			match = "*"
		}
		name := s.TableName
		if name == "" {
			name = strconv.Itoa(int(s.Table))
		}
		t.Rows = append(t.Rows, []string{strconv.Itoa(s.Pass), name, strconv.Itoa(int(s.Priority)), match,
			strings.Join(s.Actions, ","), stepRule(s.Rule), fmt.Sprintf("0x%x", s.Cookie), strings.Join(s.Notes, "; ")})
	}
	if err := print(out, format, res, func() table { return t }); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "\nVerdict: %s\n", verdictText(res.Verdict))
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"palisade.dev/palisade/controller/apis/controlplane"
)

const querySummary = "Show which policies select a pod (appliedTo) and which have it as a peer: query endpoint NS/POD."

func init() {
	register(command{name: "query", summary: querySummary, run: runQuery})
}

// parsePodRef reads "namespace/name".
func parsePodRef(s string) (controlplane.PodReference, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return controlplane.PodReference{}, fmt.Errorf("invalid pod %q: want NAMESPACE/POD (a namespace and a pod name as Kubernetes allows them)", s)
	}
	return controlplane.PodReference{Namespace: ns, Name: name}, nil
}

func runQuery(args []string, out io.Writer) error {
	fs := flagSet("query endpoint NS/POD", querySummary, out)
	o := outputFlag(fs, "table")
	kubeconfig := kubeconfigFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 || fs.Arg(0) != "endpoint" {
		return errors.New("usage: palisadectl query endpoint NAMESPACE/POD")
	}
	pod, err := parsePodRef(fs.Arg(1))
	if err != nil {
		return err
	}
	if err := checkFormat(*o); err != nil {
		return err
	}
	c, err := newAPIClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var q controlplane.EndpointQuery
	path := "namespaces/" + pod.Namespace + "/" + controlplane.ResourceEndpointQueries + "/" + pod.Name // AbsPath escapes it
	if err := c.get(ctx, path, nil, &q); err != nil {
		return err
	}
	return printQuery(out, *o, &q)
}

// printQuery prints one row per appliedTo policy and per rule with the pod
// as a peer.
func printQuery(out io.Writer, format string, q *controlplane.EndpointQuery) error {
	if format == "table" || format == "wide" {
		fmt.Fprintf(out, "Pod %s on node %s, IPs %s\n", q.Pod, orDash(q.Node), orDash(strings.Join(q.IPs, ",")))
		if len(q.AppliedTo) == 0 && len(q.Peers) == 0 {
			_, err := fmt.Fprintln(out, "No policy selects the pod or has it as a peer: it is not isolated.")
			return err
		}
	}
	return print(out, format, q, func() table {
		t := table{Headers: []string{"ROLE", "POLICY", "DIRECTION", "RULE", "GROUP", "INTERNAL-NAME"}, Narrow: 4}
		for _, a := range q.AppliedTo {
			t.Rows = append(t.Rows, []string{"appliedTo", sourceOf(a.Policy), strings.Join(a.PolicyTypes, ","), "-", a.Group, a.Policy.Name})
		}
		for _, p := range q.Peers {
			dir := "Ingress (from)"
			if p.Direction == controlplane.DirectionOut {
				dir = "Egress (to)"
			}
			t.Rows = append(t.Rows, []string{"peer", sourceOf(p.Policy), dir, strconv.Itoa(p.Rule), p.Group, p.Policy.Name})
		}
		return t
	})
}

func sourceOf(p controlplane.PolicyRef) string {
	return p.SourceRef.Namespace + "/" + p.SourceRef.Name
}

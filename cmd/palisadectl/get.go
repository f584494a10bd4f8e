package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// The controller's model, through `palisadectl get RESOURCE [NAME]` (the
// get command itself is in flows.go).
func init() {
	for _, r := range []string{controlplane.ResourceNetworkPolicies, controlplane.ResourceAppliedToGroups, controlplane.ResourceAddressGroups} {
		getResources[r] = func(args []string, out io.Writer) error { return runGetModel(r, args, out) }
	}
}

// requestTimeout bounds one request to the read API.
const requestTimeout = 30 * time.Second

// apiClient reads the controller's read API through kube-apiserver with
// the user's kubeconfig.
type apiClient struct {
	rest rest.Interface
	host string
}

// kubeconfigFlag registers --kubeconfig.
func kubeconfigFlag(fs *pflag.FlagSet) *string {
	return fs.String("kubeconfig", "", "Path of the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
}

// newAPIClient loads the kubeconfig (path, or the default loading rules
// when empty).
func newAPIClient(kubeconfig string) (*apiClient, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg.Timeout = requestTimeout
	cfg.UserAgent = "palisadectl"
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	return &apiClient{rest: dc.RESTClient(), host: cfg.Host}, nil
}

// get reads path (under controlplane.VersionPath) with the query params
// into out, and turns failures into errors that say what to do.
func (c *apiClient) get(ctx context.Context, path string, params url.Values, out any) error {
	req := c.rest.Get().AbsPath(controlplane.VersionPath, path)
	for k, vs := range params {
		for _, v := range vs {
			req = req.Param(k, v)
		}
	}
	body, err := req.DoRaw(ctx)
	if err != nil {
		return apiError(c.host, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding the answer of %s: %w", path, err)
	}
	return nil
}

// apiError explains a failed request; body is the answer, if any.
func apiError(host string, err error, body []byte) error {
	var st metav1.Status
	if json.Unmarshal(body, &st) != nil || st.Kind != "Status" {
		// Not a Status (e.g. the aggregator's plain-text "service
		// unavailable"): client-go made one from the HTTP status.
		var apiStatus apierrors.APIStatus
		var urlErr *url.Error
		switch {
		case errors.As(err, &apiStatus):
			st = apiStatus.Status()
		case errors.As(err, &urlErr):
			return fmt.Errorf("cannot reach the Kubernetes API server %s: %w", host, err)
		default:
			return err
		}
	}
	switch st.Code {
	case http.StatusForbidden:
		return fmt.Errorf("forbidden: %s\nReading Palisade's model needs RBAC permission on the API group %s (get/list of networkpolicies, appliedtogroups, addressgroups, endpointqueries, explanations): ask for the ClusterRole palisade-viewer, e.g. kubectl create clusterrolebinding palisade-viewer-USER --clusterrole=palisade-viewer --user=USER",
			st.Message, controlplane.GroupName)
	case http.StatusUnauthorized:
		return fmt.Errorf("unauthorized: %s (check the credentials of your kubeconfig)", st.Message)
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return fmt.Errorf("the Palisade controller is unreachable: %s\nCheck that palisade-controller runs and that the APIService is available: kubectl get apiservice %s",
			st.Message, controlplane.APIServiceName)
	case http.StatusNotFound:
		if st.Details == nil && st.Message == "the server could not find the requested resource" {
			return fmt.Errorf("the API %s is not served by %s: is Palisade installed (APIService %s)?", controlplane.GroupVersion, host, controlplane.APIServiceName)
		}
	}
	return errors.New(st.Message)
}

// runGetModel prints the model's objects of resource, or the one named
// by args.
func runGetModel(resource string, args []string, out io.Writer) error {
	fs := flagSet("get "+resource+" [NAME]", "Show the controller's "+resource+" (all, or the one named).", out)
	o := outputFlag(fs, "table")
	kubeconfig := kubeconfigFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("usage: palisadectl get %s [NAME]", resource)
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
	return getAndPrint(ctx, c, out, *o, resource, fs.Arg(0))
}

// checkFormat refuses an unknown -o before any request is made.
func checkFormat(format string) error {
	for _, f := range outputFormats {
		if f == format {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(outputFormats, ", "))
}

func getAndPrint(ctx context.Context, c *apiClient, out io.Writer, format, resource, name string) error {
	path := resource
	if name != "" {
		path += "/" + url.PathEscape(name)
	}
	switch resource {
	case controlplane.ResourceNetworkPolicies:
		if name != "" {
			var obj controlplane.NetworkPolicyObject
			if err := c.get(ctx, path, nil, &obj); err != nil {
				return err
			}
			return print(out, format, &obj, func() table { return policyTable([]controlplane.NetworkPolicy{obj.NetworkPolicy}) })
		}
		var l controlplane.NetworkPolicyList
		if err := c.get(ctx, path, nil, &l); err != nil {
			return err
		}
		return print(out, format, &l, func() table { return policyTable(l.Items) })
	case controlplane.ResourceAppliedToGroups:
		if name != "" {
			var obj controlplane.AppliedToGroupObject
			if err := c.get(ctx, path, nil, &obj); err != nil {
				return err
			}
			return print(out, format, &obj, func() table { return groupTable([]string{obj.Name}, [][]controlplane.GroupMember{obj.Members}, true) })
		}
		var l controlplane.AppliedToGroupList
		if err := c.get(ctx, path, nil, &l); err != nil {
			return err
		}
		names, members := make([]string, len(l.Items)), make([][]controlplane.GroupMember, len(l.Items))
		for i, g := range l.Items {
			names[i], members[i] = g.Name, g.Members
		}
		return print(out, format, &l, func() table { return groupTable(names, members, true) })
	default:
		if name != "" {
			var obj controlplane.AddressGroupObject
			if err := c.get(ctx, path, nil, &obj); err != nil {
				return err
			}
			return print(out, format, &obj, func() table { return groupTable([]string{obj.Name}, [][]controlplane.GroupMember{obj.Members}, false) })
		}
		var l controlplane.AddressGroupList
		if err := c.get(ctx, path, nil, &l); err != nil {
			return err
		}
		names, members := make([]string, len(l.Items)), make([][]controlplane.GroupMember, len(l.Items))
		for i, g := range l.Items {
			names[i], members[i] = g.Name, g.Members
		}
		return print(out, format, &l, func() table { return groupTable(names, members, false) })
	}
}

func policyTable(ps []controlplane.NetworkPolicy) table {
	t := table{Headers: []string{"SOURCE", "NAME", "POLICY-TYPES", "RULES", "APPLIED-TO"}, Narrow: 4}
	for _, p := range ps {
		t.Rows = append(t.Rows, []string{
			p.SourceRef.Namespace + "/" + p.SourceRef.Name, p.Name, orDash(strings.Join(p.PolicyTypes, ",")),
			strconv.Itoa(len(p.Rules)), orDash(strings.Join(p.AppliedToGroups, " ")),
		})
	}
	return t
}

// groupTable lists groups with their member counts; -o wide adds the
// members (pods with their node for AppliedToGroups, with their addresses
// for AddressGroups).
func groupTable(names []string, members [][]controlplane.GroupMember, withNode bool) table {
	t := table{Headers: []string{"NAME", "MEMBERS", "PODS"}, Narrow: 2}
	for i, name := range names {
		var pods []string
		for _, m := range members[i] {
			detail := strings.Join(m.IPs, ",")
			if withNode {
				detail = m.Node
			}
			pods = append(pods, m.Pod.String()+"("+detail+")")
		}
		t.Rows = append(t.Rows, []string{name, strconv.Itoa(len(members[i])), orDash(strings.Join(pods, " "))})
	}
	return t
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

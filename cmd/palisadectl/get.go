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
	"k8s.io/apimachinery/pkg/api/validation/path"
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

// restConfig loads the kubeconfig as kubectl does: path if set, else the
// files of $KUBECONFIG (a list, merged), else ~/.kube/config.
func restConfig(path string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg.UserAgent = "palisadectl"
	return cfg, nil
}

// newAPIClient loads the kubeconfig (see restConfig).
func newAPIClient(kubeconfig string) (*apiClient, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = requestTimeout
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
		if apierrors.IsNotFound(err) && !c.groupServed(ctx) {
			return fmt.Errorf("the API %s is not served by %s: is Palisade installed (APIService %s)?", controlplane.GroupVersion, c.host, controlplane.APIServiceName)
		}
		return apiError(c.host, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding the answer of %s: %w", path, err)
	}
	return nil
}

// groupServed tells whether kube-apiserver serves the read API's group:
// false only if its discovery answers 404 (a 404 of a request may be the
// controller's "not found" of an object, or kube-apiserver not knowing the
// group at all).
func (c *apiClient) groupServed(ctx context.Context) bool {
	_, err := c.rest.Get().AbsPath(controlplane.GroupPath).DoRaw(ctx)
	return !apierrors.IsNotFound(err)
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
		if st.Reason == controlplane.StatusReasonFrontProxyRejected {
			return fmt.Errorf("the Palisade controller refused kube-apiserver's front proxy: %s\nThe controller trusts the front proxy as ConfigMap kube-system/extension-apiserver-authentication describes it: check that kube-apiserver's --proxy-client-cert-file is signed by its --requestheader-client-ca-file and that its name is in --requestheader-allowed-names, and that APIService %s points at the Service %s/%s (kubectl get apiservice %s -o yaml)",
				st.Message, controlplane.APIServiceName, controlplane.ServiceNamespace, controlplane.ServiceName, controlplane.APIServiceName)
		}
		return fmt.Errorf("unauthorized: %s (check the credentials of your kubeconfig)", st.Message)
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return fmt.Errorf("the Palisade controller is unreachable: %s\nCheck that palisade-controller runs and that the APIService is available: kubectl get apiservice %s",
			st.Message, controlplane.APIServiceName)
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
	if name := fs.Arg(0); name != "" {
		if errs := path.IsValidPathSegmentName(name); len(errs) > 0 {
			return fmt.Errorf("invalid name %q: %s", name, strings.Join(errs, "; "))
		}
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
		path += "/" + name // AbsPath escapes it
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

package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// fakeAPIServer answers the read API's paths with canned objects, as
// kube-apiserver would proxy them, and records the requests.
func fakeAPIServer(t *testing.T, answers map[string]any) (kubeconfig string, requests *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		q.Del("timeout") // client-go adds the kubeconfig's timeout
		seen = append(seen, strings.TrimSuffix(r.URL.Path+"?"+q.Encode(), "?"))
		if r.Header.Get("Authorization") != "Bearer secret" {
			t.Errorf("request without the kubeconfig's token: %v", r.Header)
		}
		v, ok := answers[r.URL.Path]
		if !ok {
			// kube-apiserver's answer for a group it does not serve.
			v = plainText{http.StatusNotFound, "404 page not found"}
		}
		code := http.StatusOK
		if st, ok := v.(*metav1.Status); ok {
			code = int(st.Code)
		}
		if text, ok := v.(plainText); ok {
			http.Error(w, text.body, text.code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(srv.Close)
	cfg := clientcmdapi.NewConfig()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: srv.URL, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "secret"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, &seen
}

// plainText is an answer that is not JSON, as kube-apiserver's aggregator
// gives when the APIService's endpoint is down.
type plainText struct {
	code int
	body string
}

func tm(kind string) metav1.TypeMeta { return metav1.TypeMeta{APIVersion: cp.GroupVersion, Kind: kind} }

func failure(code int32, msg string) *metav1.Status {
	return &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Code: code, Message: msg}
}

func failureReason(code int32, reason metav1.StatusReason, msg string) *metav1.Status {
	st := failure(code, msg)
	st.Reason = reason
	return st
}

// servedGroup is the discovery answer of kube-apiserver with Palisade
// installed.
var servedGroup = &metav1.APIGroup{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "APIGroup"}, Name: cp.GroupName}

var (
	webPod    = cp.PodReference{Namespace: "shop", Name: "web"}
	clientPod = cp.PodReference{Namespace: "shop", Name: "client"}
	allowWeb  = cp.NetworkPolicy{
		Name: "uid-1", SourceRef: cp.NetworkPolicyReference{Type: "K8sNetworkPolicy", Namespace: "shop", Name: "allow-web"},
		AppliedToGroups: []string{"atg-web"}, PolicyTypes: []string{"Ingress"},
		Rules: []cp.Rule{{Direction: cp.DirectionIn, From: cp.Peer{AddressGroups: []string{"ag-client"}}, Services: []cp.Service{{Protocol: cp.ProtocolTCP, Port: "80"}}}},
	}
	allowWebRef = cp.PolicyRef{Name: allowWeb.Name, SourceRef: allowWeb.SourceRef}
)

func TestModelCommands(t *testing.T) {
	v := cp.VersionPath
	kubeconfig, requests := fakeAPIServer(t, map[string]any{
		cp.GroupPath:                   servedGroup,
		v + "/networkpolicies/missing": failureReason(404, metav1.StatusReasonNotFound, `networkpolicies "missing" not found`),
		v + "/networkpolicies/uid 1":   &cp.NetworkPolicyObject{TypeMeta: tm("NetworkPolicy"), NetworkPolicy: allowWeb},
		v + "/networkpolicies":         &cp.NetworkPolicyList{TypeMeta: tm("NetworkPolicyList"), Items: []cp.NetworkPolicy{allowWeb}},
		v + "/networkpolicies/uid-1":   &cp.NetworkPolicyObject{TypeMeta: tm("NetworkPolicy"), NetworkPolicy: allowWeb},
		v + "/appliedtogroups": &cp.AppliedToGroupList{TypeMeta: tm("AppliedToGroupList"), Items: []cp.AppliedToGroup{
			{Name: "atg-web", Members: []cp.GroupMember{{Pod: webPod, IPs: []string{"198.19.0.2"}, Node: "node1"}}}}},
		v + "/addressgroups/ag-client": &cp.AddressGroupObject{TypeMeta: tm("AddressGroup"), AddressGroup: cp.AddressGroup{
			Name: "ag-client", Members: []cp.GroupMember{{Pod: clientPod, IPs: []string{"198.19.1.2"}}}}},
		v + "/addressgroups": failure(403, `addressgroups.controlplane.palisade.dev is forbidden: User "bob" cannot list resource "addressgroups"`),
		v + "/namespaces/shop/endpointqueries/web": &cp.EndpointQuery{TypeMeta: tm("EndpointQuery"), Pod: webPod, Node: "node1", IPs: []string{"198.19.0.2"},
			AppliedTo: []cp.EndpointAppliedTo{{Policy: allowWebRef, Group: "atg-web", PolicyTypes: []string{"Ingress"}}}, Peers: []cp.EndpointPeer{}},
		v + "/namespaces/shop/endpointqueries/ghost": failure(404, "pod shop/ghost is not known to the controller"),
		v + "/explanations": &cp.Explanation{TypeMeta: tm("Explanation"), From: clientPod, To: webPod, FromIP: "198.19.1.2", ToIP: "198.19.0.2",
			Protocol: cp.ProtocolTCP, Port: 80, Verdict: cp.VerdictAllowed,
			Ingress: cp.DirectionExplanation{Isolated: true, Allowed: true, IsolatingPolicies: []cp.PolicyRef{allowWebRef},
				AllowingRules: []cp.RuleRef{{Policy: allowWebRef, Index: 0, Rule: allowWeb.Rules[0]}}},
			Egress: cp.DirectionExplanation{Allowed: true}},
	})
	k := []string{"--kubeconfig", kubeconfig}
	tests := []struct {
		args     []string
		code     int
		out, err []string
		notErr   string
		request  string
	}{
		{args: []string{"get", "networkpolicies"}, out: []string{"SOURCE", "shop/allow-web  uid-1  Ingress       1"}},
		{args: []string{"get", "networkpolicies", "-o", "wide"}, out: []string{"APPLIED-TO", "atg-web"}},
		{args: []string{"get", "networkpolicies", "uid-1", "-o", "json"}, out: []string{`"kind": "NetworkPolicy"`, `"apiVersion": "controlplane.palisade.dev/v1alpha1"`, `"sourceRef"`}},
		{args: []string{"get", "appliedtogroups", "-o", "wide"}, out: []string{"atg-web  1        shop/web(node1)"}},
		{args: []string{"get", "addressgroups", "ag-client", "-o", "yaml"}, out: []string{"kind: AddressGroup", "- ips:"}},
		{args: []string{"get", "addressgroups"}, code: 1, err: []string{"forbidden:", `User "bob"`, "ClusterRole palisade-viewer"}},
		{args: []string{"get", "pods"}, code: 1, err: []string{`unknown resource "pods"`, "networkpolicies"}},
		{args: []string{"get", "networkpolicies", "missing"}, code: 1, err: []string{`networkpolicies "missing" not found`}, notErr: "not served"},
		{args: []string{"get", "networkpolicies", "uid 1"}, out: []string{"shop/allow-web"}, request: v + "/networkpolicies/uid 1"},
		{args: []string{"get", "networkpolicies", "a/b"}, code: 1, err: []string{`invalid name "a/b"`}},
		{args: []string{"get", "networkpolicies", ".."}, code: 1, err: []string{`invalid name ".."`}},
		{args: []string{"query", "endpoint", "x/.."}, code: 1, err: []string{`invalid pod "x/.."`}},
		{args: []string{"query", "endpoint", "shop/web"}, out: []string{"Pod shop/web on node node1", "appliedTo  shop/allow-web  Ingress"},
			request: v + "/namespaces/shop/endpointqueries/web"},
		{args: []string{"query", "endpoint", "shop/ghost"}, code: 1, err: []string{"shop/ghost is not known"}},
		{args: []string{"query", "pod", "shop/web"}, code: 1, err: []string{"usage: palisadectl query endpoint"}},
		{args: []string{"explain", "--from", "shop/client", "--to", "shop/web", "--port", "80"},
			out:     []string{"Allowed: shop/client (198.19.1.2) -> shop/web (198.19.0.2) TCP/80", "egress   shop/client  -", "allowed (not isolated)", "shop/allow-web#0"},
			request: v + "/explanations?from=shop%2Fclient&port=80&protocol=TCP&to=shop%2Fweb"},
		{args: []string{"explain", "--from", "shop/client", "--to", "shop/web", "--port", "80", "-o", "wide"}, out: []string{"from[ag-client] ports[TCP/80]"}},
		{args: []string{"explain", "--from", "shop/client", "--to", "shop/web", "--port", "80", "--protocol", "icmp"}, code: 1, err: []string{`--protocol "icmp"`}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			*requests = nil
			var out, errb bytes.Buffer
			if code := run(append(tc.args, k...), &out, &errb); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, errb.String())
			}
			for _, s := range tc.out {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tc.err {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			if tc.notErr != "" && strings.Contains(errb.String(), tc.notErr) {
				t.Errorf("stderr has %q:\n%s", tc.notErr, errb.String())
			}
			if tc.request != "" && (len(*requests) != 1 || (*requests)[0] != tc.request) {
				t.Errorf("requests %q, want %q", *requests, tc.request)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	kubeconfig, _ := fakeAPIServer(t, map[string]any{
		cp.VersionPath + "/networkpolicies": failure(503, `error trying to reach service: dial tcp 198.18.0.1:10349: connect: connection refused`),
	})
	var out, errb bytes.Buffer
	if code := run([]string{"get", "networkpolicies", "--kubeconfig", kubeconfig}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "the Palisade controller is unreachable") || !strings.Contains(errb.String(), "kubectl get apiservice") {
		t.Errorf("exit %d, stderr %s", code, errb.String())
	}

	// The aggregator's own answer when the controller is down.
	kubeconfig, _ = fakeAPIServer(t, map[string]any{cp.VersionPath + "/networkpolicies": plainText{503, "service unavailable"}})
	errb.Reset()
	if code := run([]string{"get", "networkpolicies", "--kubeconfig", kubeconfig}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "the Palisade controller is unreachable") {
		t.Errorf("exit %d, stderr %s", code, errb.String())
	}

	// No apiserver at all.
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c"}
	cfg.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := run([]string{"get", "networkpolicies", "--kubeconfig", path}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "cannot reach the Kubernetes API server https://127.0.0.1:1") {
		t.Errorf("exit %d, stderr %s", code, errb.String())
	}
}

func TestKubeconfigFromEnvironment(t *testing.T) {
	kubeconfig, requests := fakeAPIServer(t, map[string]any{
		cp.VersionPath + "/networkpolicies": &cp.NetworkPolicyList{TypeMeta: tm("NetworkPolicyList")},
	})
	t.Setenv("KUBECONFIG", kubeconfig)
	var out, errb bytes.Buffer
	if code := run([]string{"get", "networkpolicies", "-o", "json"}, &out, &errb); code != 0 || len(*requests) != 1 {
		t.Errorf("exit %d, %d requests; stderr %s", code, len(*requests), errb.String())
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		t.Fatal(err)
	}
}

// TestGroupNotServed: kube-apiserver without Palisade answers every path
// of the group with its plain-text 404, and palisadectl asks whether
// Palisade is installed.
func TestGroupNotServed(t *testing.T) {
	kubeconfig, requests := fakeAPIServer(t, nil)
	var out, errb bytes.Buffer
	if code := run([]string{"get", "networkpolicies", "x", "--kubeconfig", kubeconfig}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "is not served by") || !strings.Contains(errb.String(), "is Palisade installed (APIService v1alpha1.controlplane.palisade.dev)?") {
		t.Errorf("exit %d, stderr %s", code, errb.String())
	}
	if want := []string{cp.VersionPath + "/networkpolicies/x", cp.GroupPath}; !slices.Equal(*requests, want) {
		t.Errorf("requests %q, want %q (the request, then discovery of the group)", *requests, want)
	}
}

// TestUnauthorized: kube-apiserver refusing the user's credentials and the
// controller refusing kube-apiserver's front proxy get different advice.
func TestUnauthorized(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer *metav1.Status
		want   []string
		not    string
	}{
		{"kube-apiserver refuses the user", failureReason(401, metav1.StatusReasonUnauthorized, "Unauthorized"),
			[]string{"unauthorized: Unauthorized", "check the credentials of your kubeconfig"}, "front proxy"},
		{"the controller refuses the front proxy", failureReason(401, cp.StatusReasonFrontProxyRejected, "not kube-apiserver's front proxy: the client certificate's name \"x\" is not one of"),
			[]string{"refused kube-apiserver's front proxy", "--requestheader-client-ca-file", "--requestheader-allowed-names", "kubectl get apiservice v1alpha1.controlplane.palisade.dev"},
			"credentials of your kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kubeconfig, _ := fakeAPIServer(t, map[string]any{cp.VersionPath + "/networkpolicies": tc.answer})
			var out, errb bytes.Buffer
			if code := run([]string{"get", "networkpolicies", "--kubeconfig", kubeconfig}, &out, &errb); code != 1 {
				t.Errorf("exit %d", code)
			}
			for _, s := range tc.want {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			if strings.Contains(errb.String(), tc.not) {
				t.Errorf("stderr has %q:\n%s", tc.not, errb.String())
			}
		})
	}
}

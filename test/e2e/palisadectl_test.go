//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	cp "palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/proc"
)

// TestPalisadectl reads the controller's model through kube-apiserver's
// aggregation layer with the built palisadectl and the lab's kubeconfig:
// get, query endpoint and explain (allowed and denied) for a policy "web
// accepts TCP 80 from client"; kubectl get --raw of the group; and a user
// without RBAC is told what permission is missing until it is bound to the
// shipped ClusterRole palisade-viewer.
func TestPalisadectl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	binDir := lab.DefaultBinDir()
	if !filepath.IsAbs(binDir) {
		binDir = filepath.Join("..", "..", binDir)
	}
	pctl := filepath.Join(binDir, "palisadectl")
	if _, err := os.Stat(pctl); err != nil {
		t.Fatalf("palisadectl is missing (run `make build`): %v", err)
	}
	l := startLab(t, ctx, 1)
	kube := l.Client()

	const ns = "pctl"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"web", "client", "other"} {
		createPinnedPod(t, ctx, kube, ns, app, "node1", map[string]string{"app": app})
	}
	waitForPodIPs(t, ctx, kube, ns, 3)
	np := podPolicy(ns, "web", "web", "client", &networkingv1.NetworkPolicyPort{Port: ptr(intstr.FromInt32(80))})
	if _, err := kube.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	run := func(kubeconfig string, args ...string) (string, string, error) {
		cmd := exec.CommandContext(ctx, pctl, append(args, "--kubeconfig", kubeconfig)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	admin := l.Kubeconfig()
	mustRun := func(args ...string) string {
		t.Helper()
		out, errOut, err := run(admin, args...)
		if err != nil {
			t.Fatalf("palisadectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}

	t.Log("the APIService becomes available and the model has the policy")
	var policies cp.NetworkPolicyList
	retryUntil(t, 90*time.Second, func() error {
		out, errOut, err := run(admin, "get", "networkpolicies", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		if err := json.Unmarshal([]byte(out), &policies); err != nil {
			return err
		}
		if len(policies.Items) != 1 || policies.Items[0].SourceRef.Name != "web" {
			return fmt.Errorf("policies %s", out)
		}
		return nil
	})
	p := policies.Items[0]
	if policies.Kind != "NetworkPolicyList" || len(p.AppliedToGroups) != 1 || len(p.Rules) != 1 || len(p.Rules[0].From.AddressGroups) != 1 {
		t.Fatalf("unexpected model: %+v", policies)
	}
	atg, ag := p.AppliedToGroups[0], p.Rules[0].From.AddressGroups[0]

	t.Log("get: tables and single objects")
	if out := mustRun("get", "networkpolicies"); !strings.Contains(out, "pctl/web") || !strings.Contains(out, p.Name) {
		t.Errorf("get networkpolicies:\n%s", out)
	}
	var obj cp.NetworkPolicyObject
	mustJSON(t, mustRun("get", "networkpolicies", p.Name, "-o", "json"), &obj)
	if obj.Kind != "NetworkPolicy" || obj.SourceRef.Namespace != ns {
		t.Errorf("get networkpolicies %s: %+v", p.Name, obj)
	}
	var atgObj cp.AppliedToGroupObject
	mustJSON(t, mustRun("get", "appliedtogroups", atg, "-o", "json"), &atgObj)
	if pods := memberPods(atgObj.Members); !slices.Equal(pods, []string{"pctl/web"}) || atgObj.Members[0].Node != "node1" {
		t.Errorf("AppliedToGroup %s: %+v", atg, atgObj)
	}
	var agObj cp.AddressGroupObject
	mustJSON(t, mustRun("get", "addressgroups", ag, "-o", "json"), &agObj)
	if pods := memberPods(agObj.Members); !slices.Equal(pods, []string{"pctl/client"}) {
		t.Errorf("AddressGroup %s: %+v", ag, agObj)
	}
	if out := mustRun("get", "addressgroups", "-o", "wide"); !strings.Contains(out, "pctl/client(") {
		t.Errorf("get addressgroups -o wide:\n%s", out)
	}

	t.Log("query endpoint: web is a target, client a peer, other neither")
	var q cp.EndpointQuery
	mustJSON(t, mustRun("query", "endpoint", "pctl/web", "-o", "json"), &q)
	if len(q.AppliedTo) != 1 || q.AppliedTo[0].Policy.SourceRef.Name != "web" || len(q.Peers) != 0 {
		t.Errorf("query endpoint pctl/web: %+v", q)
	}
	mustJSON(t, mustRun("query", "endpoint", "pctl/client", "-o", "json"), &q)
	if len(q.AppliedTo) != 0 || len(q.Peers) != 1 || q.Peers[0].Direction != cp.DirectionIn || q.Peers[0].Group != ag {
		t.Errorf("query endpoint pctl/client: %+v", q)
	}
	if out := mustRun("query", "endpoint", "pctl/other"); !strings.Contains(out, "not isolated") {
		t.Errorf("query endpoint pctl/other:\n%s", out)
	}
	if _, errOut, err := run(admin, "query", "endpoint", "pctl/ghost"); err == nil || !strings.Contains(errOut, "pctl/ghost is not known") {
		t.Errorf("query of an unknown pod: %v %s", err, errOut)
	}

	t.Log("explain: allowed by the rule, denied for another source and another port")
	out := mustRun("explain", "--from", "pctl/client", "--to", "pctl/web", "--port", "80")
	if !strings.HasPrefix(out, "Allowed: pctl/client") || !strings.Contains(out, "pctl/web#0") {
		t.Errorf("explain client -> web:80:\n%s", out)
	}
	t.Logf("palisadectl explain --from pctl/client --to pctl/web --port 80:\n%s", out)
	for _, args := range [][]string{
		{"--from", "pctl/other", "--to", "pctl/web", "--port", "80"},
		{"--from", "pctl/client", "--to", "pctl/web", "--port", "81"},
	} {
		var e cp.Explanation
		mustJSON(t, mustRun(append([]string{"explain", "-o", "json"}, args...)...), &e)
		if e.Verdict != cp.VerdictDenied || !e.Ingress.Isolated || len(e.Ingress.AllowingRules) != 0 || e.Egress.Isolated {
			t.Errorf("explain %v: %+v", args, e)
		}
	}

	t.Log("kubectl get --raw reaches the group")
	for path, kind := range map[string]string{
		cp.GroupPath:                            "APIGroup",
		cp.VersionPath:                          "APIResourceList",
		cp.VersionPath + "/networkpolicies":     "NetworkPolicyList",
		cp.VersionPath + "/addressgroups/" + ag: "AddressGroup",
	} {
		raw, err := kubectl(t, ctx, l, "", "get", "--raw", path)
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal([]byte(raw), &tm); err != nil || tm.Kind != kind {
			t.Errorf("kubectl get --raw %s: kind %q (%v), want %s", path, tm.Kind, err, kind)
		}
	}

	t.Log("the controller authenticates kube-apiserver's front proxy itself and authorizes the user it names")
	directCheck(t, ctx, kube, layout.Dir(l.Dir()).PKI())

	t.Log("a user without RBAC is told what is missing; palisade-viewer grants it")
	viewer := userKubeconfig(t, ctx, l, ns, "viewer")
	_, errOut, err := run(viewer, "get", "networkpolicies")
	if err == nil || !strings.Contains(errOut, "forbidden") || !strings.Contains(errOut, "palisade-viewer") {
		t.Errorf("get without RBAC: %v %s", err, errOut)
	}
	t.Logf("palisadectl get networkpolicies without RBAC:\n%s", errOut)
	applyViewerRole(t, ctx, l)
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pctl-viewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "palisade-viewer"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "viewer"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	retryUntil(t, 30*time.Second, func() error {
		out, errOut, err := run(viewer, "explain", "--from", "pctl/client", "--to", "pctl/web", "--port", "80")
		if err != nil || !strings.HasPrefix(out, "Allowed") {
			return fmt.Errorf("%v: %s%s", err, out, errOut)
		}
		return nil
	})

	t.Log("without the controller, palisadectl says it is unreachable")
	procs, err := proc.Read(layout.Dir(l.Dir()).Pids())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(procs, func(p *proc.Process) bool { return p.Name == "palisade-controller" })
	if i < 0 {
		t.Fatal("the lab's palisade-controller is not recorded")
	}
	if err := procs[i].Stop(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = run(admin, "get", "networkpolicies")
	if err == nil || !strings.Contains(errOut, "the Palisade controller is unreachable") {
		t.Errorf("get without the controller: %v %s", err, errOut)
	}
	t.Logf("palisadectl get networkpolicies without the controller:\n%s", errOut)
}

// retryUntil retries f until it succeeds or timeout passes.
func retryUntil(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(time.Second)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v:\n%s", err, s)
	}
}

func memberPods(ms []cp.GroupMember) []string {
	var pods []string
	for _, m := range ms {
		pods = append(pods, m.Pod.String())
	}
	slices.Sort(pods)
	return pods
}

// userKubeconfig writes a kubeconfig for the ServiceAccount ns/name
// (created, with no RBAC).
func userKubeconfig(t *testing.T, ctx context.Context, l *lab.Lab, ns, name string) string {
	t.Helper()
	kube := l.Client()
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expiry := int64(3600)
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(l.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Token = tr.Status.Token
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// applyViewerRole creates the ClusterRole palisade-viewer as the manifest
// ships it.
func applyViewerRole(t *testing.T, ctx context.Context, l *lab.Lab) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "build", "yamls", "base", "21-controlplane-api.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.Contains(doc, "\nkind: ClusterRole\n") {
			if out, err := kubectl(t, ctx, l, doc, "apply", "--server-side", "-f", "-"); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			return
		}
	}
	t.Fatal("the manifest has no ClusterRole palisade-viewer")
}

// directCheck calls the controller's read API directly, bypassing
// kube-apiserver: as the front proxy (the lab's proxy client certificate)
// for a user without RBAC, the controller's own SubjectAccessReview
// refuses (403); without a client certificate (forged headers only) or
// with one of another CA, the controller refuses the front proxy (401).
func directCheck(t *testing.T, ctx context.Context, kube kubernetes.Interface, pkiDir string) {
	t.Helper()
	proxy, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "front-proxy-client.crt"), filepath.Join(pkiDir, "front-proxy-client.key"))
	if err != nil {
		t.Fatalf("the lab's front proxy client certificate: %v", err)
	}
	impostor := selfSignedClient(t, "front-proxy-client")
	misnamed := signedByFrontProxyCA(t, pkiDir, "not-the-front-proxy")
	roots := controllerCA(t, ctx, kube)
	url := "https://" + net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(layout.ControllerPort)) + cp.VersionPath + "/networkpolicies"
	for _, tc := range []struct {
		name       string
		cert       *tls.Certificate
		user       string
		groups     []string
		wantCode   int
		wantReason metav1.StatusReason
		wantMsg    string
	}{
		{name: "forged headers without a client certificate", user: "system:admin", groups: []string{"system:masters"},
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: "no client certificate"},
		{name: "the front proxy's certificate for a user without RBAC", cert: &proxy, user: "pctl-nobody", groups: []string{"system:authenticated"},
			wantCode: http.StatusForbidden, wantReason: metav1.StatusReasonForbidden, wantMsg: `user "pctl-nobody" cannot list resource "networkpolicies"`},
		{name: "a certificate of another CA", cert: impostor, user: "system:admin", groups: []string{"system:masters"},
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: "not the front proxy's"},
		{name: "the front proxy CA's certificate with a name not allowed", cert: misnamed, user: "system:admin", groups: []string{"system:masters"},
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: `name "not-the-front-proxy" is not one of`},
	} {
		cfg := &tls.Config{RootCAs: roots}
		if tc.cert != nil {
			cfg.Certificates = []tls.Certificate{*tc.cert}
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Remote-User", tc.user)
		for _, g := range tc.groups {
			req.Header.Add("X-Remote-Group", g)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var st metav1.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.wantCode || st.Kind != "Status" || st.Reason != tc.wantReason || !strings.Contains(st.Message, tc.wantMsg) {
			t.Errorf("%s: %d %+v (%v), want %d with a Status of reason %s saying %q", tc.name, resp.StatusCode, st, err, tc.wantCode, tc.wantReason, tc.wantMsg)
		}
	}
}

// signedByFrontProxyCA makes a client certificate named cn, signed by the
// lab's front proxy CA (its key is in pkiDir).
func signedByFrontProxyCA(t *testing.T, pkiDir, cn string) *tls.Certificate {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "front-proxy-ca.crt"), filepath.Join(pkiDir, "front-proxy-ca.key"))
	if err != nil {
		t.Fatalf("the lab's front proxy CA: %v", err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return clientCert(t, caCert, ca.PrivateKey, cn)
}

// selfSignedClient makes a client certificate named cn, signed by a CA
// made here (not the front proxy's).
func selfSignedClient(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	c := clientCert(t, ca, caKey, cn)
	c.Certificate = append(c.Certificate, caDER)
	return c
}

// clientCert makes a client-auth certificate named cn signed by ca.
func clientCert(t *testing.T, ca *x509.Certificate, caKey any, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

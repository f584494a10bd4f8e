//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab"
)

// kubectl runs the lab's pinned kubectl against the lab and returns its
// standard output; on failure the error carries its standard error.
func kubectl(t *testing.T, ctx context.Context, l *lab.Lab, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(lab.DefaultK8sBinDir(), "kubectl"), append([]string{"--kubeconfig", l.Kubeconfig()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), err
}

// TestInstallManifest applies build/yamls/palisade.yml to a real apiserver:
// everything with a strict server-side dry run, the objects that change
// nothing on nodes (namespace, config, RBAC, service) for real, and then
// checks that the RBAC grants what the components need and nothing of
// what they do not.
func TestInstallManifest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	manifest, err := os.ReadFile(filepath.Join("..", "..", "build", "yamls", "palisade.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// A cluster without Palisade: the lab's own controller would have
	// made palisade-system, its Service and the APIService already.
	l := startLabWith(t, ctx, lab.Options{Nodes: 1, NoPalisade: true})
	if out, err := kubectl(t, ctx, l, "", "get", "namespace", "palisade-system"); err == nil {
		t.Fatalf("palisade-system exists before the manifest is applied: %s", out)
	}
	// A server-side dry run does not create the Namespace the namespaced
	// objects need.
	if out, err := kubectl(t, ctx, l, "", "create", "namespace", "palisade-system"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := kubectl(t, ctx, l, string(manifest), "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-")
	if err != nil {
		t.Fatalf("the apiserver rejected the manifest (server-side dry run): %v\n%s", err, out)
	}
	t.Logf("server-side dry run:\n%s", out)

	// For real, except the workloads (the lab runs its own components).
	var docs []string
	for _, d := range strings.Split(string(manifest), "\n---\n") {
		if strings.Contains(d, "\nkind: Deployment\n") || strings.Contains(d, "\nkind: DaemonSet\n") {
			continue
		}
		docs = append(docs, d)
	}
	if out, err := kubectl(t, ctx, l, strings.Join(docs, "\n---\n"), "apply", "--server-side", "--validate=strict", "-f", "-"); err != nil {
		t.Fatalf("applying the manifest's objects: %v\n%s", err, out)
	}

	canI := func(sa, verb, resource, ns string) bool {
		args := []string{"auth", "can-i", verb, resource, "--as=system:serviceaccount:palisade-system:" + sa}
		if ns != "" {
			args = append(args, "-n", ns)
		}
		// can-i exits 1 for "no"; its answer is on standard output.
		out, _ := kubectl(t, ctx, l, "", args...)
		return out == "yes"
	}
	for _, c := range []struct {
		sa, verb, resource, ns string
		want                   bool
	}{
		{"palisade-controller", "watch", "pods", "", true},
		{"palisade-controller", "list", "networkpolicies.networking.k8s.io", "", true},
		{"palisade-controller", "create", "tokenreviews.authentication.k8s.io", "", true},
		{"palisade-controller", "create", "configmaps", "palisade-system", true},
		{"palisade-controller", "update", "configmaps", "palisade-system", false},
		{"palisade-controller", "update", "configmaps/palisade-config", "palisade-system", false},
		{"palisade-controller", "get", "configmaps/palisade-config", "palisade-system", false},
		{"palisade-controller", "list", "configmaps", "palisade-system", false},
		{"palisade-controller", "update", "leases.coordination.k8s.io", "palisade-system", true},
		{"palisade-controller", "create", "subjectaccessreviews.authorization.k8s.io", "", true},
		{"palisade-controller", "patch", "apiservices.apiregistration.k8s.io/v1alpha1.controlplane.palisade.dev", "", true},
		{"palisade-controller", "patch", "apiservices.apiregistration.k8s.io/v1.apps", "", false},
		{"palisade-controller", "get", "apiservices.apiregistration.k8s.io/v1alpha1.controlplane.palisade.dev", "", true},
		{"palisade-controller", "update", "apiservices.apiregistration.k8s.io/v1alpha1.controlplane.palisade.dev", "", false},
		{"palisade-controller", "get", "apiservices.apiregistration.k8s.io/v1.apps", "", false},
		{"palisade-controller", "update", "apiservices.apiregistration.k8s.io/v1.apps", "", false},
		{"palisade-controller", "list", "apiservices.apiregistration.k8s.io", "", false},
		{"palisade-controller", "get", "configmaps/extension-apiserver-authentication", "kube-system", true},
		{"palisade-controller", "get", "configmaps/kube-root-ca.crt", "kube-system", false},
		{"palisade-controller", "delete", "pods", "", false},
		{"palisade-controller", "update", "configmaps", "default", false},
		{"palisade-controller", "get", "secrets", "", false},
		{"palisade-agent", "watch", "nodes", "", true},
		// Where the controller publishes its CA and agents read it.
		{"palisade-controller", "update", "configmaps/" + controlplane.CAConfigMapName, controlplane.CAConfigMapNamespace, true},
		{"palisade-controller", "get", "configmaps/" + controlplane.CAConfigMapName, controlplane.CAConfigMapNamespace, true},
		{"palisade-agent", "get", "configmaps/" + controlplane.CAConfigMapName, controlplane.CAConfigMapNamespace, true},
		{"palisade-agent", "get", "configmaps/palisade-config", controlplane.CAConfigMapNamespace, false},
		{"palisade-agent", "list", "pods", "", true}, // its node's, by field selector
		{"palisade-controller", "list", "nodes", "", false},
		{"palisade-agent", "delete", "pods", "", false},
		{"palisade-agent", "update", "nodes", "", false},
		{"palisade-agent", "get", "secrets", "palisade-system", false},
	} {
		if got := canI(c.sa, c.verb, c.resource, c.ns); got != c.want {
			t.Errorf("%s can %s %s (ns %q) = %v, want %v", c.sa, c.verb, c.resource, c.ns, got, c.want)
		}
	}

	// Operators: palisade-viewer reads the read API and nothing else, and
	// the built-in "view" role does not (an endpoint query shows other
	// namespaces' policies). Asked with SubjectAccessReviews: kubectl's
	// can-i needs discovery of the group, which no controller serves here.
	userCanI := func(user, verb, resource, ns string) bool {
		t.Helper()
		res, group, _ := strings.Cut(resource, ".")
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: res},
		}}
		got, err := l.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %s %s %s: %v", user, verb, resource, err)
		}
		return got.Status.Allowed
	}
	if out, err := kubectl(t, ctx, l, "", "create", "clusterrolebinding", "test-palisade-viewer", "--clusterrole=palisade-viewer", "--user=viewer"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := kubectl(t, ctx, l, "", "create", "rolebinding", "test-view", "-n", "default", "--clusterrole=view", "--user=ns-viewer"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, c := range []struct {
		user, verb, resource, ns string
		want                     bool
	}{
		{"viewer", "list", "networkpolicies.controlplane.palisade.dev", "", true},
		{"viewer", "get", "addressgroups.controlplane.palisade.dev", "", true},
		{"viewer", "list", "explanations.controlplane.palisade.dev", "", true},
		{"viewer", "get", "endpointqueries.controlplane.palisade.dev", "default", true},
		{"viewer", "list", "pods", "default", false},
		{"viewer", "create", "networkpolicies.controlplane.palisade.dev", "", false},
		{"nobody", "list", "networkpolicies.controlplane.palisade.dev", "", false},
		{"system:serviceaccount:palisade-system:palisade-agent", "list", "appliedtogroups.controlplane.palisade.dev", "", false},
	} {
		if got := userCanI(c.user, c.verb, c.resource, c.ns); got != c.want {
			t.Errorf("%s can %s %s (ns %q) = %v, want %v", c.user, c.verb, c.resource, c.ns, got, c.want)
		}
	}
	viewer, err := l.Client().RbacV1().ClusterRoles().Get(ctx, "palisade-viewer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range viewer.Labels {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			t.Errorf("palisade-viewer carries %s: it would be aggregated into a built-in role, and an endpoint query names other namespaces' policies", k)
		}
	}
	if userCanI("ns-viewer", "get", "endpointqueries.controlplane.palisade.dev", "default") {
		t.Error("the view role grants get endpointqueries.controlplane.palisade.dev")
	}
}

package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"palisade.dev/palisade/build/yamls"
	"palisade.dev/palisade/controller/apis/controlplane"
)

// The lab runs palisade-controller and the agents as the manifest's
// ServiceAccounts, with the manifest's RBAC, so that a grant the
// components need and the manifest lacks fails the lab's tests.
const (
	controllerServiceAccount = "palisade-controller"
	controllerKubeconfig     = "controller.kubeconfig"
	agentKubeconfig          = "agent.kubeconfig"
	// serviceAccountTokenSeconds outlives any lab.
	serviceAccountTokenSeconds = 7 * 24 * 3600
)

// rbacResources are the manifest's kinds the lab applies, by kind.
var rbacResources = map[string]schema.GroupVersionResource{
	"ServiceAccount":     {Version: "v1", Resource: "serviceaccounts"},
	"ClusterRole":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"Role":               {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":        {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
}

// rbacObjects returns the ServiceAccounts and RBAC objects of manifest.
func rbacObjects(manifest []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decoding the manifest: %w", err)
		}
		if _, ok := rbacResources[obj.GetKind()]; ok {
			out = append(out, obj)
		}
	}
	return out, nil
}

// installRBAC applies the shipped manifest's ServiceAccounts and RBAC
// (palisade-system must exist) and writes the kubeconfigs the lab's
// controller and agents use: the ServiceAccounts' tokens.
func (l *Lab) installRBAC(ctx context.Context) error {
	objs, err := rbacObjects(yamls.Manifest)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(l.config)
	if err != nil {
		return err
	}
	for _, obj := range objs {
		r := dyn.Resource(rbacResources[obj.GetKind()])
		var ri dynamic.ResourceInterface = r
		if ns := obj.GetNamespace(); ns != "" {
			ri = r.Namespace(ns)
		}
		if _, err := ri.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s %s/%s from the manifest: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
		}
	}
	for _, k := range []struct{ sa, file string }{
		{controllerServiceAccount, controllerKubeconfig},
		{AgentServiceAccountName, agentKubeconfig},
	} {
		if err := l.writeServiceAccountKubeconfig(ctx, k.sa, filepath.Join(string(l.dir), k.file)); err != nil {
			return err
		}
	}
	return nil
}

// writeServiceAccountKubeconfig writes a kubeconfig for the lab's
// apiserver with a token of palisade-system/sa.
func (l *Lab) writeServiceAccountKubeconfig(ctx context.Context, sa, path string) error {
	secs := int64(serviceAccountTokenSeconds)
	tr, err := l.client.CoreV1().ServiceAccounts(controlplane.Namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("a token of ServiceAccount %s/%s: %w", controlplane.Namespace, sa, err)
	}
	return writeKubeconfig(path, l.config.Host, l.config.CAData, tr.Status.Token)
}

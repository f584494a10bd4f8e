package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab/layout"
)

// The agents' ServiceAccount (palisade-controller's default
// --agent-service-account). It needs no RBAC: the lab's agents talk to the
// apiserver with the admin kubeconfig, and the controller admits the
// account's node-bound tokens by itself.
const (
	AgentServiceAccountNamespace = controlplane.Namespace
	AgentServiceAccountName      = "palisade-agent"
	// agentTokenFile, in a node's agent directory, holds the token the
	// agent presents to the controller.
	agentTokenFile = "controller-token"
	// agentTokenSeconds outlives any lab.
	agentTokenSeconds = 7 * 24 * 3600
)

// writeAgentToken mints a token of the agents' ServiceAccount bound to node
// i's Node object (once the node's runtime has registered it) and writes it
// where node i's agent reads it.
func (l *Lab) writeAgentToken(ctx context.Context, i int, nd layout.NodeDir) error {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: AgentServiceAccountNamespace, Name: AgentServiceAccountName}}
	if _, err := l.client.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ServiceAccount %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	name := layout.NodeName(i)
	var node *corev1.Node
	if err := l.waitFor(ctx, "Node "+name+" registered", 60*time.Second, func(ctx context.Context) (bool, error) {
		n, err := l.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		node = n
		return err == nil, nil
	}); err != nil {
		return err
	}
	token, err := MintNodeToken(ctx, l.client, AgentServiceAccountNamespace, AgentServiceAccountName, node, agentTokenSeconds)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(nd.Agent(), agentTokenFile), []byte(token), 0o600)
}

// MintNodeToken requests (TokenRequest) a token of the ServiceAccount
// namespace/name bound to node: the apiserver's TokenReview of it reports
// the node in the user's extra "authentication.kubernetes.io/node-name",
// and it stops being valid when the Node is deleted.
func MintNodeToken(ctx context.Context, client kubernetes.Interface, namespace, name string, node *corev1.Node, seconds int64) (string, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &seconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID},
	}}
	res, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of %s/%s bound to node %s: %w", namespace, name, node.Name, err)
	}
	return res.Status.Token, nil
}

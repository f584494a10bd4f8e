package apiserver

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeNameExtraKey is the user extra that TokenReview returns for a
// ServiceAccount token bound to a Node (TokenRequest with a boundObjectRef
// of kind Node) or to a Pod running on a node: the node's name.
const NodeNameExtraKey = "authentication.kubernetes.io/node-name"

// TokenReviewer creates TokenReviews; a clientset's
// AuthenticationV1().TokenReviews() is one.
type TokenReviewer interface {
	Create(ctx context.Context, review *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// TokenAuthorizer admits agents by their ServiceAccount token: the
// apiserver must authenticate the token (TokenReview) as the agents'
// ServiceAccount, and the token must be bound to the node whose span is
// asked for. Review results are cached briefly by token hash, so that
// reconnecting agents do not each cost a TokenReview.
type TokenAuthorizer struct {
	reviewer  TokenReviewer
	agentUser string
	ttl       time.Duration
	now       func() time.Time

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedReview
}

type cachedReview struct {
	status  authenticationv1.TokenReviewStatus
	expires time.Time
}

// maxCachedReviews bounds the review cache; when full it is emptied.
const maxCachedReviews = 4096

// NewTokenAuthorizer returns an authorizer that admits tokens of the
// ServiceAccount namespace/name bound to the requested node, caching
// TokenReview results for ttl.
func NewTokenAuthorizer(reviewer TokenReviewer, namespace, name string, ttl time.Duration) *TokenAuthorizer {
	return &TokenAuthorizer{
		reviewer:  reviewer,
		agentUser: "system:serviceaccount:" + namespace + ":" + name,
		ttl:       ttl,
		now:       time.Now,
		cache:     map[[sha256.Size]byte]cachedReview{},
	}
}

// Authorize implements Authorizer.
func (a *TokenAuthorizer) Authorize(ctx context.Context, r *http.Request, node string) error {
	token, ok := bearerToken(r)
	if !ok {
		return &AuthError{Status: http.StatusUnauthorized,
			Reason: "no bearer token: agents must present their ServiceAccount token (Authorization: Bearer)"}
	}
	status, err := a.review(ctx, token)
	if err != nil {
		return err
	}
	if !status.Authenticated {
		reason := "the token is not valid"
		if status.Error != "" {
			reason += ": " + status.Error
		}
		return &AuthError{Status: http.StatusUnauthorized, Reason: reason}
	}
	if status.User.Username != a.agentUser {
		return &AuthError{Status: http.StatusForbidden,
			Reason: fmt.Sprintf("user %q is not the agents' ServiceAccount %q", status.User.Username, a.agentUser)}
	}
	bound := status.User.Extra[NodeNameExtraKey]
	switch {
	case len(bound) == 0:
		return &AuthError{Status: http.StatusForbidden,
			Reason: fmt.Sprintf("the token is not bound to a node; present a token bound to node %q (TokenRequest with boundObjectRef kind Node, or the projected token of a pod on the node)", node)}
	case len(bound) != 1 || bound[0] != node:
		return &AuthError{Status: http.StatusForbidden,
			Reason: fmt.Sprintf("the token is bound to node %q and may only watch that node's span, not node %q", strings.Join(bound, ","), node)}
	}
	return nil
}

func (a *TokenAuthorizer) review(ctx context.Context, token string) (authenticationv1.TokenReviewStatus, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[key]
	a.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.status, nil
	}
	res, err := a.reviewer.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, fmt.Errorf("reviewing the token with the apiserver: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxCachedReviews {
		clear(a.cache)
	}
	a.cache[key] = cachedReview{status: res.Status, expires: now.Add(a.ttl)}
	return res.Status, nil
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

package apiserver

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeReviewer answers TokenReviews from a table of tokens.
type fakeReviewer struct {
	users map[string]authenticationv1.UserInfo
	err   error
	calls int
}

func (f *fakeReviewer) Create(_ context.Context, r *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := r.DeepCopy()
	if u, ok := f.users[r.Spec.Token]; ok {
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: u}
	} else {
		out.Status = authenticationv1.TokenReviewStatus{Error: "token has expired"}
	}
	return out, nil
}

const agentUser = "system:serviceaccount:kube-system:palisade-agent"

func boundTo(user, node string) authenticationv1.UserInfo {
	u := authenticationv1.UserInfo{Username: user}
	if node != "" {
		u.Extra = map[string]authenticationv1.ExtraValue{NodeNameExtraKey: {node}}
	}
	return u
}

func TestTokenAuthorizer(t *testing.T) {
	reviewer := &fakeReviewer{users: map[string]authenticationv1.UserInfo{
		"node1-token":   boundTo(agentUser, "node1"),
		"unbound-token": boundTo(agentUser, ""),
		"other-sa":      boundTo("system:serviceaccount:default:default", "node1"),
	}}
	a := NewTokenAuthorizer(reviewer, "kube-system", "palisade-agent", time.Minute)
	tests := []struct {
		name, header, node string
		wantStatus         int // 0: allowed
		wantReason         string
	}{
		{name: "bound to the node", header: "Bearer node1-token", node: "node1"},
		{name: "scheme is case-insensitive", header: "bearer node1-token", node: "node1"},
		{name: "no header", node: "node1", wantStatus: http.StatusUnauthorized, wantReason: "no bearer token"},
		{name: "basic auth", header: "Basic dXNlcjpwYXNz", node: "node1", wantStatus: http.StatusUnauthorized, wantReason: "no bearer token"},
		{name: "empty token", header: "Bearer  ", node: "node1", wantStatus: http.StatusUnauthorized, wantReason: "no bearer token"},
		{name: "invalid token", header: "Bearer forged", node: "node1", wantStatus: http.StatusUnauthorized, wantReason: "the token is not valid: token has expired"},
		{name: "another node", header: "Bearer node1-token", node: "node2", wantStatus: http.StatusForbidden,
			wantReason: `the token is bound to node "node1" and may only watch that node's span, not node "node2"`},
		{name: "not bound to a node", header: "Bearer unbound-token", node: "node1", wantStatus: http.StatusForbidden, wantReason: "the token is not bound to a node"},
		{name: "another ServiceAccount", header: "Bearer other-sa", node: "node1", wantStatus: http.StatusForbidden,
			wantReason: `user "system:serviceaccount:default:default" is not the agents' ServiceAccount "` + agentUser + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "https://controller/watch", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			err := a.Authorize(context.Background(), r, tt.node)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Authorize() = %v, want allowed", err)
				}
				return
			}
			var authErr *AuthError
			if !errors.As(err, &authErr) || authErr.Status != tt.wantStatus || !strings.Contains(authErr.Reason, tt.wantReason) {
				t.Fatalf("Authorize() = %#v, want status %d with reason containing %q", err, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestTokenAuthorizerCachesReviews(t *testing.T) {
	reviewer := &fakeReviewer{users: map[string]authenticationv1.UserInfo{"t": boundTo(agentUser, "node1")}}
	a := NewTokenAuthorizer(reviewer, "kube-system", "palisade-agent", 10*time.Second)
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	r, _ := http.NewRequest(http.MethodGet, "https://controller/watch", nil)
	r.Header.Set("Authorization", "Bearer t")
	for i := range 3 {
		if err := a.Authorize(context.Background(), r, "node1"); err != nil {
			t.Fatalf("Authorize #%d: %v", i, err)
		}
	}
	if reviewer.calls != 1 {
		t.Errorf("%d TokenReviews within the TTL, want 1", reviewer.calls)
	}
	now = now.Add(11 * time.Second)
	delete(reviewer.users, "t") // revoked
	r.Header.Set("Authorization", "Bearer t")
	var authErr *AuthError
	if err := a.Authorize(context.Background(), r, "node1"); !errors.As(err, &authErr) || authErr.Status != http.StatusUnauthorized {
		t.Errorf("after the TTL a revoked token got %v, want 401", err)
	}

	reviewer.err = errors.New("connection refused")
	r.Header.Set("Authorization", "Bearer new")
	err := a.Authorize(context.Background(), r, "node1")
	if err == nil || errors.As(err, &authErr) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a failed TokenReview got %v, want a plain error (not a refusal)", err)
	}
}

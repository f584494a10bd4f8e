package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

type fakeSource struct {
	snapshot *Snapshot
	pods     map[string]*cp.GroupMember // nil value: known, not a member
	unsynced bool
}

func (f fakeSource) Synced() bool { return !f.unsynced }

func (f fakeSource) Snapshot() *Snapshot { return f.snapshot }

func (f fakeSource) Pod(namespace, name string) (*cp.GroupMember, bool) {
	m, ok := f.pods[namespace+"/"+name]
	return m, ok
}

// headerAuthn authenticates the user named by X-Test-User.
type headerAuthn struct{}

func (headerAuthn) Authenticate(_ context.Context, r *http.Request) (*User, error) {
	if u := r.Header.Get("X-Test-User"); u != "" {
		return &User{Name: u}, nil
	}
	return nil, &AuthError{Status: http.StatusUnauthorized, Reason: "no client certificate"}
}

// allowReviewer allows the users in allowed and records the reviews.
type allowReviewer struct {
	allowed map[string]bool
	seen    []authorizationv1.ResourceAttributes
}

func (a *allowReviewer) Create(_ context.Context, sar *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	a.seen = append(a.seen, *sar.Spec.ResourceAttributes)
	sar.Status.Allowed = a.allowed[sar.Spec.User]
	return sar, nil
}

func TestReadAPI(t *testing.T) {
	s := snapshot(policy("p", "web", ingress, in(groups("client"), tcp("http", 0))))
	source := fakeSource{snapshot: s, pods: map[string]*cp.GroupMember{"ns/web": web, "ns/client": client, "ns/pending": nil}}
	reviewer := &allowReviewer{allowed: map[string]bool{"alice": true}}
	api := NewReadAPI(context.Background(), source, headerAuthn{}, reviewer)
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("next")) })
	h := api.Wrap(next)

	v := cp.VersionPath
	tests := []struct {
		name, method, path, user string
		code                     int
		// kind is the JSON kind of the answer; contains a substring.
		kind, contains string
		// review is the expected SubjectAccessReview (nil: none).
		review *authorizationv1.ResourceAttributes
	}{
		{name: "group discovery", path: cp.GroupPath, user: "bob", code: 200, kind: "APIGroup", contains: `"preferredVersion"`},
		{name: "version discovery", path: v, user: "bob", code: 200, kind: "APIResourceList", contains: `"endpointqueries"`},
		{name: "unauthenticated", path: v, code: 401, kind: "Status", contains: "no client certificate"},
		{name: "list policies", path: v + "/networkpolicies", user: "alice", code: 200, kind: "NetworkPolicyList", contains: `"name": "p"`,
			review: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "networkpolicies"}},
		{name: "get policy", path: v + "/networkpolicies/p", user: "alice", code: 200, kind: "NetworkPolicy", contains: `"appliedToGroups"`,
			review: &authorizationv1.ResourceAttributes{Verb: "get", Resource: "networkpolicies", Name: "p"}},
		{name: "missing policy", path: v + "/networkpolicies/nope", user: "alice", code: 404, kind: "Status", contains: `networkpolicies \"nope\" not found`},
		{name: "list appliedtogroups", path: v + "/appliedtogroups", user: "alice", code: 200, kind: "AppliedToGroupList", contains: `"ns/web"`},
		{name: "get addressgroup", path: v + "/addressgroups/client", user: "alice", code: 200, kind: "AddressGroup", contains: `"ns/client"`},
		{name: "forbidden", path: v + "/addressgroups", user: "bob", code: 403, kind: "Status", contains: "palisade-viewer"},
		{name: "unknown resource", path: v + "/pods", user: "alice", code: 404, kind: "Status", contains: "unknown resource"},
		{name: "POST", method: http.MethodPost, path: v + "/networkpolicies", user: "alice", code: 405, kind: "Status"},
		{name: "endpoint query", path: v + "/namespaces/ns/endpointqueries/web", user: "alice", code: 200, kind: "EndpointQuery", contains: `"appliedToGroup": "web"`,
			review: &authorizationv1.ResourceAttributes{Verb: "get", Resource: "endpointqueries", Namespace: "ns", Name: "web"}},
		{name: "endpoint query of an unknown pod", path: v + "/namespaces/ns/endpointqueries/ghost", user: "alice", code: 404, kind: "Status", contains: "ns/ghost is not known"},
		{name: "explanation", path: v + "/explanations?from=ns/client&to=ns/web&port=8080&protocol=TCP", user: "alice", code: 200, kind: "Explanation", contains: `"verdict": "Allowed"`,
			review: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "explanations"}},
		{name: "explanation, TCP by default", path: v + "/explanations?from=ns/client&to=ns/web&port=9090", user: "alice", code: 200, kind: "Explanation", contains: `"verdict": "Denied"`},
		{name: "explanation, bad port", path: v + "/explanations?from=ns/client&to=ns/web&port=x", user: "alice", code: 400, kind: "Status", contains: "want a port number"},
		{name: "explanation, bad protocol", path: v + "/explanations?from=ns/client&to=ns/web&port=1&protocol=ICMP", user: "alice", code: 400, kind: "Status", contains: "unknown protocol"},
		{name: "explanation, bad pod", path: v + "/explanations?from=client&to=ns/web&port=1", user: "alice", code: 400, kind: "Status", contains: "want NAMESPACE/POD"},
		{name: "explanation, unknown pod", path: v + "/explanations?from=ns/ghost&to=ns/web&port=1", user: "alice", code: 404, kind: "Status", contains: "ns/ghost is not known"},
		{name: "explanation, pending pod", path: v + "/explanations?from=ns/pending&to=ns/web&port=1", user: "alice", code: 400, kind: "Status", contains: "not scheduled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reviewer.seen = nil
			r := httptest.NewRequest(cmpOrString(tc.method, http.MethodGet), "https://controller"+tc.path, nil)
			if tc.user != "" {
				r.Header.Set("X-Test-User", tc.user)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			body := w.Body.String()
			if w.Code != tc.code {
				t.Errorf("status %d, want %d: %s", w.Code, tc.code, body)
			}
			var tm metav1.TypeMeta
			if err := json.Unmarshal(w.Body.Bytes(), &tm); err != nil {
				t.Fatalf("not JSON: %v: %s", err, body)
			}
			wantVersion := cp.GroupVersion
			if tc.kind == "Status" || tc.kind == "APIGroup" || tc.kind == "APIResourceList" {
				wantVersion = "v1"
			}
			if tm.Kind != tc.kind || tm.APIVersion != wantVersion {
				t.Errorf("answer is %s %s, want %s %s", tm.APIVersion, tm.Kind, wantVersion, tc.kind)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("answer does not contain %q:\n%s", tc.contains, body)
			}
			if tc.review != nil {
				want := *tc.review
				want.Group, want.Version = cp.GroupName, cp.Version
				if len(reviewer.seen) != 1 || !cmp.Equal(reviewer.seen[0], want) {
					t.Errorf("reviews %+v, want one %+v", reviewer.seen, want)
				}
			}
		})
	}

	t.Run("discovery shape", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://controller"+v, nil)
		r.Header.Set("X-Test-User", "bob")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var l metav1.APIResourceList
		if err := json.Unmarshal(w.Body.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, res := range l.APIResources {
			got[res.Name] = res.Kind + " " + strings.Join(res.Verbs, ",")
		}
		want := map[string]string{
			"networkpolicies": "NetworkPolicy get,list", "appliedtogroups": "AppliedToGroup get,list", "addressgroups": "AddressGroup get,list",
			"endpointqueries": "EndpointQuery get", "explanations": "Explanation list",
		}
		if l.GroupVersion != cp.GroupVersion || !cmp.Equal(got, want) {
			t.Errorf("discovery %s %v, want %s %v", l.GroupVersion, got, cp.GroupVersion, want)
		}
	})
	t.Run("other paths pass through", func(t *testing.T) {
		for _, path := range []string{cp.WatchPath, HealthzPath, "/apis/controlplane.palisade.devx"} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://controller"+path, nil))
			if w.Body.String() != "next" {
				t.Errorf("%s was not passed on: %q", path, w.Body.String())
			}
		}
	})
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestReadAPIWaitsForTheModel: until the model is built from synced
// informers, resource requests get 503 (a partial model would answer
// wrong), while discovery answers.
func TestReadAPIWaitsForTheModel(t *testing.T) {
	source := fakeSource{snapshot: snapshot(policy("p", "web", ingress)), unsynced: true}
	api := NewReadAPI(context.Background(), source, headerAuthn{}, &allowReviewer{allowed: map[string]bool{"alice": true}})
	h := api.Wrap(http.NotFoundHandler())
	for path, want := range map[string]int{
		cp.VersionPath:                      http.StatusOK,
		cp.VersionPath + "/networkpolicies": http.StatusServiceUnavailable,
	} {
		r := httptest.NewRequest(http.MethodGet, "https://controller"+path, nil)
		r.Header.Set("X-Test-User", "alice")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want || want != http.StatusOK && !strings.Contains(w.Body.String(), "still building its model") {
			t.Errorf("GET %s before the model is built: %d %s, want %d", path, w.Code, w.Body, want)
		}
	}
}

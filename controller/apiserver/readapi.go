package apiserver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// ModelSource is the controller's model as the read API needs it.
type ModelSource interface {
	// Synced reports whether the model is built from synced informers;
	// until then it is partial and the API answers 503.
	Synced() bool
	// Snapshot returns the model as published so far.
	Snapshot() *Snapshot
	// Pod returns a pod as a group member (nil when it cannot be one,
	// e.g. it has no node yet) and whether the controller knows the pod.
	Pod(namespace, name string) (member *controlplane.GroupMember, known bool)
}

// Authenticator returns the user a request is made for: an *AuthError if
// it is refused, another error if the decision could not be made.
type Authenticator interface {
	Authenticate(ctx context.Context, r *http.Request) (*User, error)
}

// ReadAPI serves the operators' read API (see controlplane.GroupPath)
// behind kube-apiserver's aggregation layer.
type ReadAPI struct {
	logger   klog.Logger
	source   ModelSource
	authn    Authenticator
	reviewer SubjectAccessReviewer
}

// NewReadAPI returns the read API over source; requests are authenticated
// by authn (the front proxy) and authorized by SubjectAccessReviews.
func NewReadAPI(ctx context.Context, source ModelSource, authn Authenticator, reviewer SubjectAccessReviewer) *ReadAPI {
	return &ReadAPI{logger: klog.FromContext(ctx), source: source, authn: authn, reviewer: reviewer}
}

// Wrap returns a handler that serves the read API's paths and passes
// every other request to next.
func (a *ReadAPI) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == controlplane.GroupPath || strings.HasPrefix(r.URL.Path, controlplane.GroupPath+"/") {
			a.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: controlplane.GroupVersion, Kind: kind}
}

// resources are the read API's resources, as discovery lists them.
var resources = []metav1.APIResource{
	{Name: controlplane.ResourceNetworkPolicies, SingularName: "networkpolicy", Kind: "NetworkPolicy", Verbs: metav1.Verbs{"get", "list"}},
	{Name: controlplane.ResourceAppliedToGroups, SingularName: "appliedtogroup", Kind: "AppliedToGroup", Verbs: metav1.Verbs{"get", "list"}},
	{Name: controlplane.ResourceAddressGroups, SingularName: "addressgroup", Kind: "AddressGroup", Verbs: metav1.Verbs{"get", "list"}},
	{Name: controlplane.ResourceEndpointQueries, SingularName: "endpointquery", Namespaced: true, Kind: "EndpointQuery", Verbs: metav1.Verbs{"get"}},
	{Name: controlplane.ResourceExplanations, SingularName: "explanation", Kind: "Explanation", Verbs: metav1.Verbs{"list"}},
}

// request is a parsed read API path.
type request struct {
	verb, resource, namespace, name string
}

// parsePath splits a path under controlplane.VersionPath; ok is false for
// paths that name nothing.
func parsePath(path string) (req request, ok bool) {
	rest, found := strings.CutPrefix(path, controlplane.VersionPath+"/")
	if !found {
		return req, false
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	switch {
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == controlplane.ResourceEndpointQueries && parts[1] != "" && parts[3] != "":
		return request{verb: "get", resource: parts[2], namespace: parts[1], name: parts[3]}, true
	case len(parts) == 1 && parts[0] == controlplane.ResourceExplanations:
		// kube-apiserver authorizes a GET of a collection as "list".
		return request{verb: "list", resource: parts[0]}, true
	case len(parts) == 1 && isObjectResource(parts[0]):
		return request{verb: "list", resource: parts[0]}, true
	case len(parts) == 2 && isObjectResource(parts[0]) && parts[1] != "":
		return request{verb: "get", resource: parts[0], name: parts[1]}, true
	}
	return req, false
}

func isObjectResource(r string) bool {
	return r == controlplane.ResourceNetworkPolicies || r == controlplane.ResourceAppliedToGroups || r == controlplane.ResourceAddressGroups
}

func (a *ReadAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "the read API serves only GET")
		return
	}
	user, err := a.authn.Authenticate(r.Context(), r)
	if err != nil {
		a.refuse(w, r, err)
		return
	}
	switch r.URL.Path {
	case controlplane.GroupPath, controlplane.GroupPath + "/":
		v := metav1.GroupVersionForDiscovery{GroupVersion: controlplane.GroupVersion, Version: controlplane.Version}
		writeJSON(w, http.StatusOK, &metav1.APIGroup{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "APIGroup"},
			Name:     controlplane.GroupName, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v,
		})
		return
	case controlplane.VersionPath, controlplane.VersionPath + "/":
		writeJSON(w, http.StatusOK, &metav1.APIResourceList{
			TypeMeta:     metav1.TypeMeta{APIVersion: "v1", Kind: "APIResourceList"},
			GroupVersion: controlplane.GroupVersion, APIResources: resources,
		})
		return
	}
	req, ok := parsePath(r.URL.Path)
	if !ok {
		names := make([]string, len(resources))
		for i, res := range resources {
			names[i] = res.Name
		}
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("unknown resource path %q: the resources of %s are %s (endpointqueries are namespaced)", r.URL.Path, controlplane.GroupVersion, strings.Join(names, ", ")))
		return
	}
	if err := authorizeUser(r.Context(), a.reviewer, user, req.verb, req.resource, req.namespace, req.name); err != nil {
		a.refuse(w, r, err)
		return
	}
	if !a.source.Synced() {
		// A partial model would answer wrong (a policy missing, a pod
		// "not isolated"); the controller is ready within seconds.
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the controller is still building its model from the Kubernetes API; retry in a moment")
		return
	}
	status, body := a.serve(req, r)
	writeJSON(w, status, body)
}

// refuse answers a failed authentication or authorization.
func (a *ReadAPI) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var authErr *AuthError
	if !errors.As(err, &authErr) {
		a.logger.Error(err, "Cannot authenticate or authorize a read API request", "path", r.URL.Path)
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error())
		return
	}
	a.logger.V(2).Info("Refused a read API request", "path", r.URL.Path, "status", authErr.Status, "reason", authErr.Reason)
	reason := metav1.StatusReasonForbidden
	switch {
	case authErr.FrontProxy:
		reason = controlplane.StatusReasonFrontProxyRejected
	case authErr.Status == http.StatusUnauthorized:
		reason = metav1.StatusReasonUnauthorized
	}
	writeStatus(w, authErr.Status, reason, authErr.Reason)
}

// serve answers an authorized request with a status code and a body.
func (a *ReadAPI) serve(req request, r *http.Request) (int, any) {
	switch req.resource {
	case controlplane.ResourceEndpointQueries:
		member, known := a.source.Pod(req.namespace, req.name)
		if !known {
			return podNotFound(req.namespace + "/" + req.name)
		}
		return http.StatusOK, QueryEndpoint(a.source.Snapshot(), controlplane.PodReference{Namespace: req.namespace, Name: req.name}, member)
	case controlplane.ResourceExplanations:
		return a.explain(r)
	}
	s := a.source.Snapshot()
	switch req.resource {
	case controlplane.ResourceNetworkPolicies:
		if req.name != "" {
			if p, ok := s.Policies[req.name]; ok {
				return http.StatusOK, &controlplane.NetworkPolicyObject{TypeMeta: typeMeta("NetworkPolicy"), NetworkPolicy: *p}
			}
			return objectNotFound(req)
		}
		l := &controlplane.NetworkPolicyList{TypeMeta: typeMeta("NetworkPolicyList"), Items: []controlplane.NetworkPolicy{}}
		for _, p := range s.sortedPolicies() {
			l.Items = append(l.Items, *p)
		}
		return http.StatusOK, l
	case controlplane.ResourceAppliedToGroups:
		if req.name != "" {
			if g, ok := s.AppliedToGroups[req.name]; ok {
				return http.StatusOK, &controlplane.AppliedToGroupObject{TypeMeta: typeMeta("AppliedToGroup"), AppliedToGroup: *g}
			}
			return objectNotFound(req)
		}
		l := &controlplane.AppliedToGroupList{TypeMeta: typeMeta("AppliedToGroupList"), Items: []controlplane.AppliedToGroup{}}
		for _, g := range s.AppliedToGroups {
			l.Items = append(l.Items, *g)
		}
		slices.SortFunc(l.Items, func(a, b controlplane.AppliedToGroup) int { return cmp.Compare(a.Name, b.Name) })
		return http.StatusOK, l
	default: // address groups
		if req.name != "" {
			if g, ok := s.AddressGroups[req.name]; ok {
				return http.StatusOK, &controlplane.AddressGroupObject{TypeMeta: typeMeta("AddressGroup"), AddressGroup: *g}
			}
			return objectNotFound(req)
		}
		l := &controlplane.AddressGroupList{TypeMeta: typeMeta("AddressGroupList"), Items: []controlplane.AddressGroup{}}
		for _, g := range s.AddressGroups {
			l.Items = append(l.Items, *g)
		}
		slices.SortFunc(l.Items, func(a, b controlplane.AddressGroup) int { return cmp.Compare(a.Name, b.Name) })
		return http.StatusOK, l
	}
}

// explain answers explanations?from=NS/POD&to=NS/POD&port=N&protocol=P.
func (a *ReadAPI) explain(r *http.Request) (int, any) {
	q := r.URL.Query()
	bad := func(format string, args ...any) (int, any) {
		return http.StatusBadRequest, status(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf(format, args...))
	}
	var pods [2]*controlplane.GroupMember
	for i, param := range []string{"from", "to"} {
		ns, name, ok := strings.Cut(q.Get(param), "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return bad("query parameter %q is %q: want NAMESPACE/POD", param, q.Get(param))
		}
		member, known := a.source.Pod(ns, name)
		if !known {
			return podNotFound(ns + "/" + name)
		}
		if member == nil {
			return bad("pod %s/%s cannot be evaluated: it is not scheduled, has finished, or uses the host network", ns, name)
		}
		pods[i] = member
	}
	port, err := strconv.ParseInt(q.Get("port"), 10, 32)
	if err != nil || port < 1 || port > 65535 {
		return bad("query parameter \"port\" is %q: want a port number 1-65535", q.Get("port"))
	}
	proto, err := ParseProtocol(cmp.Or(q.Get("protocol"), string(controlplane.ProtocolTCP)))
	if err != nil {
		return bad("%v", err)
	}
	e, err := Explain(a.source.Snapshot(), pods[0], pods[1], proto, int32(port))
	if err != nil {
		return bad("%v", err)
	}
	return http.StatusOK, e
}

func podNotFound(pod string) (int, any) {
	return http.StatusNotFound, status(http.StatusNotFound, metav1.StatusReasonNotFound,
		fmt.Sprintf("pod %s is not known to the controller (no such pod, or it was just created)", pod))
}

func objectNotFound(req request) (int, any) {
	return http.StatusNotFound, status(http.StatusNotFound, metav1.StatusReasonNotFound,
		fmt.Sprintf("%s %q not found", req.resource, req.name))
}

func status(code int, reason metav1.StatusReason, msg string) *metav1.Status {
	return &metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	}
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, status(code, reason, msg))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

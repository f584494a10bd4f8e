package controller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/controller/apiserver"
	"palisade.dev/palisade/controller/networkpolicy"
)

// requestHeaderTTL is how long the front proxy's configuration is reused.
const requestHeaderTTL = time.Minute

// newReadAPI returns the operators' read API over the model of state:
// requests come through kube-apiserver's front proxy and are authorized by
// SubjectAccessReview.
func newReadAPI(ctx context.Context, client kubernetes.Interface, state *networkpolicy.State, synced func() bool) *apiserver.ReadAPI {
	authn := apiserver.NewRequestHeaderAuthenticator(client.CoreV1().ConfigMaps(apiserver.AuthenticationConfigMapNamespace), requestHeaderTTL)
	return apiserver.NewReadAPI(ctx, modelSource{state, synced}, authn, client.AuthorizationV1().SubjectAccessReviews())
}

// modelSource serves the read API from the incremental model.
type modelSource struct {
	state  *networkpolicy.State
	synced func() bool
}

func (m modelSource) Synced() bool { return m.synced() }

func (m modelSource) Snapshot() *apiserver.Snapshot {
	model := m.state.Model()
	return &apiserver.Snapshot{Policies: model.Policies, AppliedToGroups: model.AppliedToGroups, AddressGroups: model.AddressGroups}
}

func (m modelSource) Pod(namespace, name string) (*controlplane.GroupMember, bool) {
	return m.state.Pod(namespace, name)
}

// apiServices is the resource of kube-apiserver's APIServices.
var apiServices = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// The APIService's caBundle is checked every apiServiceCheckInterval, and
// every apiServiceRetryInterval while that fails.
const (
	apiServiceCheckInterval = time.Minute
	apiServiceRetryInterval = 2 * time.Second
)

// syncAPIServiceCA keeps the caBundle of the read API's APIService set to
// the controller's CA (caPEM), so that kube-apiserver trusts the
// controller, until ctx is done: it checks every interval, and every
// retry while the check fails (the APIService may not exist yet), so that
// an APIService that is recreated (e.g. by a new kubectl apply) recovers.
func syncAPIServiceCA(ctx context.Context, client dynamic.Interface, caPEM []byte, interval, retry time.Duration) {
	logger := klog.FromContext(ctx).WithValues("apiService", controlplane.APIServiceName)
	failures := 0
	for {
		wait := interval
		patched, err := ensureAPIServiceCA(ctx, client, caPEM)
		switch {
		case err != nil && ctx.Err() == nil:
			if failures++; failures == 1 || failures%30 == 0 {
				logger.Error(err, "Setting the APIService's caBundle failed; retrying", "attempts", failures)
			}
			wait = retry
		case patched:
			failures = 0
			logger.Info("Set the APIService's caBundle to the controller's CA")
		default:
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ensureAPIServiceCA patches the APIService's caBundle to caPEM if it
// differs, and tells whether it did.
func ensureAPIServiceCA(ctx context.Context, client dynamic.Interface, caPEM []byte) (bool, error) {
	res := client.Resource(apiServices)
	cur, err := res.Get(ctx, controlplane.APIServiceName, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	want := base64.StdEncoding.EncodeToString(caPEM)
	if got, _, _ := unstructured.NestedString(cur.Object, "spec", "caBundle"); got == want {
		return false, nil
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": want}})
	if err != nil {
		return false, err
	}
	if _, err := res.Patch(ctx, controlplane.APIServiceName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return false, err
	}
	return true, nil
}

// serviceHosts are the DNS names of the controller's Service, which
// kube-apiserver verifies the serving certificate against.
func serviceHosts() []string {
	svc := controlplane.ServiceName + "." + controlplane.ServiceNamespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

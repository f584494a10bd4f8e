package controller

import (
	"context"
	"encoding/json"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
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
func newReadAPI(ctx context.Context, client kubernetes.Interface, state *networkpolicy.State) *apiserver.ReadAPI {
	authn := apiserver.NewRequestHeaderAuthenticator(client.CoreV1().ConfigMaps(apiserver.AuthenticationConfigMapNamespace), requestHeaderTTL)
	return apiserver.NewReadAPI(ctx, modelSource{state}, authn, client.AuthorizationV1().SubjectAccessReviews())
}

// modelSource serves the read API from the incremental model.
type modelSource struct{ state *networkpolicy.State }

func (m modelSource) Snapshot() *apiserver.Snapshot {
	model := m.state.Model()
	return &apiserver.Snapshot{Policies: model.Policies, AppliedToGroups: model.AppliedToGroups, AddressGroups: model.AddressGroups}
}

func (m modelSource) Pod(namespace, name string) (*controlplane.GroupMember, bool) {
	return m.state.Pod(namespace, name)
}

// patchAPIServiceCA sets the caBundle of the read API's APIService to the
// controller's CA, so that kube-apiserver trusts the controller, retrying
// until it succeeds or ctx is done (the APIService may not exist yet).
func patchAPIServiceCA(ctx context.Context, client kubernetes.Interface, caPEM []byte) {
	logger := klog.FromContext(ctx).WithValues("apiService", controlplane.APIServiceName)
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"caBundle": caPEM}})
	if err != nil {
		logger.Error(err, "Cannot encode the APIService patch")
		return
	}
	failures := 0
	err = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		err := client.Discovery().RESTClient().Patch(types.MergePatchType).
			AbsPath("/apis/apiregistration.k8s.io/v1/apiservices", controlplane.APIServiceName).
			Body(patch).Do(ctx).Error()
		if err != nil {
			if failures++; failures == 1 || failures%30 == 0 {
				logger.Error(err, "Setting the APIService's caBundle failed; retrying", "attempts", failures)
			}
			return false, nil
		}
		return true, nil
	})
	if err == nil {
		logger.Info("Set the APIService's caBundle to the controller's CA")
	}
}

// serviceHosts are the DNS names of the controller's Service, which
// kube-apiserver verifies the serving certificate against.
func serviceHosts() []string {
	svc := controlplane.ServiceName + "." + controlplane.ServiceNamespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

package lab

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab/layout"
)

// The read API's Service port (build/yamls/base/20-controller.yaml).
const readAPIPortName = "api"

var apiServicesResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// labLabels are the labels of the shipped Service and APIService.
var labLabels = map[string]string{"app.kubernetes.io/name": "palisade-controller", "app.kubernetes.io/part-of": "palisade"}

// apiService is the read API's APIService as build/yamls/base ships it
// (TestAPIServiceMatchesManifest keeps them equal); the controller fills
// in its caBundle.
func apiService() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata": map[string]any{
			"name":   controlplane.APIServiceName,
			"labels": map[string]any{"app.kubernetes.io/name": labLabels["app.kubernetes.io/name"], "app.kubernetes.io/part-of": labLabels["app.kubernetes.io/part-of"]},
		},
		"spec": map[string]any{
			"group":   controlplane.GroupName,
			"version": controlplane.Version,
			"service": map[string]any{
				"name":      controlplane.ServiceName,
				"namespace": controlplane.ServiceNamespace,
				"port":      int64(layout.ControllerPort),
			},
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
		},
	}}
}

// installReadAPI makes kube-apiserver serve palisade-controller's read API:
// the namespace palisade-system, the controller's Service (without a
// selector: the controller is a host process on HostIP), an EndpointSlice
// pointing at it (the aggregator routes to endpoints, read from
// EndpointSlices), and the shipped APIService. Objects that exist are left
// as they are.
func (l *Lab) installReadAPI(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: controlplane.ServiceNamespace}}
	if _, err := l.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns.Name, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlplane.ServiceNamespace, Name: controlplane.ServiceName, Labels: labLabels},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: readAPIPortName, Port: int32(layout.ControllerPort), TargetPort: intstr.FromString(readAPIPortName), Protocol: corev1.ProtocolTCP,
		}}},
	}
	if _, err := l.client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	name, port, proto, ready := readAPIPortName, int32(layout.ControllerPort), corev1.ProtocolTCP, true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: controlplane.ServiceNamespace, Name: controlplane.ServiceName + "-lab", Labels: map[string]string{
			discoveryv1.LabelServiceName: controlplane.ServiceName,
			discoveryv1.LabelManagedBy:   "palisade-lab",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{layout.HostIP.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	if _, err := l.client.DiscoveryV1().EndpointSlices(slice.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err)
	}
	dyn, err := dynamic.NewForConfig(l.config)
	if err != nil {
		return err
	}
	if _, err := dyn.Resource(apiServicesResource).Create(ctx, apiService(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating APIService %s: %w", controlplane.APIServiceName, err)
	}
	return nil
}

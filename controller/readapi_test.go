package controller

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// apiService is the read API's APIService as the manifest creates it,
// with caBundle (none if empty).
func apiService(caBundle string) *unstructured.Unstructured {
	spec := map[string]any{"group": controlplane.GroupName, "version": controlplane.Version,
		"service": map[string]any{"namespace": controlplane.ServiceNamespace, "name": controlplane.ServiceName}}
	if caBundle != "" {
		spec["caBundle"] = caBundle
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": controlplane.APIServiceName}, "spec": spec,
	}}
}

func caBundleOf(t *testing.T, client *dynamicfake.FakeDynamicClient) string {
	t.Helper()
	cur, err := client.Resource(apiServices).Get(context.Background(), controlplane.APIServiceName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := unstructured.NestedString(cur.Object, "spec", "caBundle")
	return got
}

func TestEnsureAPIServiceCA(t *testing.T) {
	ctx := context.Background()
	caPEM := []byte("-----BEGIN CERTIFICATE-----\nours\n-----END CERTIFICATE-----\n")
	want := base64.StdEncoding.EncodeToString(caPEM)
	client := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), apiService(base64.StdEncoding.EncodeToString([]byte("old"))))

	if patched, err := ensureAPIServiceCA(ctx, client, caPEM); err != nil || !patched || caBundleOf(t, client) != want {
		t.Fatalf("a stale caBundle: patched %v, %v; caBundle %q", patched, err, caBundleOf(t, client))
	}
	if patched, err := ensureAPIServiceCA(ctx, client, caPEM); err != nil || patched || patchCount(client) != 1 {
		t.Fatalf("an up-to-date caBundle: patched %v, %v, %d patches; want no second patch", patched, err, patchCount(client))
	}

	// Recreated by a new kubectl apply, without the caBundle.
	if err := client.Resource(apiServices).Delete(ctx, controlplane.APIServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ensureAPIServiceCA(ctx, client, caPEM); err == nil {
		t.Fatal("no error without the APIService")
	}
	if _, err := client.Resource(apiServices).Create(ctx, apiService(""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if patched, err := ensureAPIServiceCA(ctx, client, caPEM); err != nil || !patched || caBundleOf(t, client) != want {
		t.Fatalf("a recreated APIService: patched %v, %v; caBundle %q", patched, err, caBundleOf(t, client))
	}
}

// TestSyncAPIServiceCARecovers: the loop keeps checking after its first
// success, so an APIService recreated later gets the caBundle again, and
// it patches only when the caBundle differs.
func TestSyncAPIServiceCARecovers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	caPEM := []byte("ca")
	want := base64.StdEncoding.EncodeToString(caPEM)
	client := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()) // no APIService yet
	done := make(chan struct{})
	go func() {
		defer close(done)
		syncAPIServiceCA(ctx, client, caPEM, 20*time.Millisecond, 5*time.Millisecond)
	}()
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	bundle := func() string {
		cur, err := client.Resource(apiServices).Get(context.Background(), controlplane.APIServiceName, metav1.GetOptions{})
		if err != nil {
			return ""
		}
		got, _, _ := unstructured.NestedString(cur.Object, "spec", "caBundle")
		return got
	}
	if _, err := client.Resource(apiServices).Create(context.Background(), apiService(""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the first caBundle", func() bool { return bundle() == want })
	if err := client.Resource(apiServices).Delete(context.Background(), controlplane.APIServiceName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Resource(apiServices).Create(context.Background(), apiService(""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the recreated APIService's caBundle", func() bool { return bundle() == want })
	n := patchCount(client)
	time.Sleep(100 * time.Millisecond) // several check intervals
	if got := patchCount(client); got != n {
		t.Errorf("%d patches of an up-to-date caBundle, want none", got-n)
	}
}

func patchCount(client *dynamicfake.FakeDynamicClient) int {
	return countVerb(client.Actions(), "patch")
}

func countVerb(actions []clienttesting.Action, verb string) int {
	n := 0
	for _, a := range actions {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}

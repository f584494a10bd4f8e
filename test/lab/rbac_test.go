package lab

import (
	"slices"
	"testing"

	"palisade.dev/palisade/build/yamls"
)

// TestRBACObjects: the lab applies the shipped manifest's accounts and
// RBAC, nothing else (no workloads, no config).
func TestRBACObjects(t *testing.T) {
	objs, err := rbacObjects(yamls.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
	}
	for _, want := range []string{
		"ServiceAccount palisade-system/palisade-controller",
		"ServiceAccount palisade-system/palisade-agent",
		"ClusterRole /palisade-controller",
		"ClusterRole /palisade-agent",
		"Role palisade-system/palisade-agent",
		"RoleBinding kube-system/palisade-controller-authentication-reader",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("the lab would not apply %s; it applies %v", want, got)
		}
	}
	for _, o := range objs {
		if _, ok := rbacResources[o.GetKind()]; !ok {
			t.Errorf("the lab would apply %s %s", o.GetKind(), o.GetName())
		}
	}
}

package networkpolicy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

type nopPublisher struct{}

func (nopPublisher) UpdateGroup(cp.Kind, string, []*cp.GroupMember, []*cp.GroupMember) {}
func (nopPublisher) DeleteGroup(cp.Kind, string)                                       {}
func (nopPublisher) SetAddressGroupPorts(string, bool)                                 {}
func (nopPublisher) UpdatePolicy(*cp.NetworkPolicy)                                    {}
func (nopPublisher) DeletePolicy(string)                                               {}
func (nopPublisher) SetSynced()                                                        {}

func TestStatePod(t *testing.T) {
	s := NewState(nopPublisher{})
	s.UpsertPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
		Status:     corev1.PodStatus{PodIP: "198.18.1.2"},
	})
	s.UpsertPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pending"}})

	m, ok := s.Pod("ns", "web")
	want := &cp.GroupMember{Pod: cp.PodReference{Namespace: "ns", Name: "web"}, IPs: []string{"198.18.1.2"}, Node: "n1",
		Ports: []cp.NamedPort{{Name: "http", Port: 8080, Protocol: cp.ProtocolTCP}}}
	if !ok || !cmp.Equal(m, want) {
		t.Errorf("Pod(ns/web) = %+v, %v; want %+v, true", m, ok, want)
	}
	if m, ok := s.Pod("ns", "pending"); !ok || m != nil {
		t.Errorf("Pod(ns/pending) = %+v, %v; want nil, true", m, ok)
	}
	if m, ok := s.Pod("ns", "missing"); ok || m != nil {
		t.Errorf("Pod(ns/missing) = %+v, %v; want nil, false", m, ok)
	}
}

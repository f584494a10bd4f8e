package noderuntime

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCNIEnv(t *testing.T) {
	base := []string{"PATH=/usr/bin", "CNI_COMMAND=stale", "HOME=/root", "CNI_ARGS=stale"}
	got := cniEnv(base, cniCall{
		Command: "ADD", ContainerID: "0f4c1a2b", Netns: "/var/run/netns/plab-p0f4c1a2b",
		PodNS: "x", PodName: "a", Path: "/opt/palisade/bin",
	})
	want := []string{
		"PATH=/usr/bin",
		"HOME=/root",
		"CNI_COMMAND=ADD",
		"CNI_CONTAINERID=0f4c1a2b",
		"CNI_NETNS=/var/run/netns/plab-p0f4c1a2b",
		"CNI_IFNAME=eth0",
		"CNI_ARGS=K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=0f4c1a2b",
		"CNI_PATH=/opt/palisade/bin",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cniEnv mismatch (-want +got):\n%s", diff)
	}
}

func TestNetConf(t *testing.T) {
	tests := []struct {
		name string
		prev json.RawMessage
		want string
	}{
		{"add", nil, `{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","agentSocket":"/lab/nodes/node1/cni.sock"}`},
		{"del", json.RawMessage(`{"cniVersion":"1.1.0","ips":[]}`),
			`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni","agentSocket":"/lab/nodes/node1/cni.sock","prevResult":{"cniVersion":"1.1.0","ips":[]}}`},
	}
	for _, tc := range tests {
		if got := string(netConf("/lab/nodes/node1/cni.sock", tc.prev)); got != tc.want {
			t.Errorf("%s: netConf =\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
}

func TestParseAddResult(t *testing.T) {
	tests := []struct {
		name, out, want string
		wantErr         bool
	}{
		{"ipv4", `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"198.19.0.5/24","gateway":"198.19.0.1","interface":0}]}`, "198.19.0.5", false},
		{"ipv6 first", `{"cniVersion":"1.1.0","ips":[{"address":"fd00::5/64"},{"address":"198.19.1.7/24"}]}`, "198.19.1.7", false},
		{"no ips", `{"cniVersion":"1.1.0","ips":[]}`, "", true},
		{"garbage", `not json`, "", true},
	}
	for _, tc := range tests {
		ip, err := parseAddResult([]byte(tc.out))
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, wantErr %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil && ip.String() != tc.want {
			t.Errorf("%s: ip = %s, want %s", tc.name, ip, tc.want)
		}
	}
}

func TestPodPorts(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Name: "a", Ports: []corev1.ContainerPort{{ContainerPort: 80}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
		{Name: "b", Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}, {ContainerPort: 9, Protocol: corev1.ProtocolSCTP}, {ContainerPort: 53}}},
	}}}
	serve, skipped := podPorts(pod)
	wantServe := []servedPort{{80, corev1.ProtocolTCP}, {53, corev1.ProtocolUDP}, {53, corev1.ProtocolTCP}}
	wantSkipped := []servedPort{{9, corev1.ProtocolSCTP}}
	if diff := cmp.Diff(wantServe, serve); diff != "" {
		t.Errorf("serve mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantSkipped, skipped); diff != "" {
		t.Errorf("skipped mismatch (-want +got):\n%s", diff)
	}
}

func TestSetRunningStatus(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{UID: "0f4c-1a2b"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "agnhost"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(time.Unix(1, 0))},
		}},
	}
	now := time.Unix(100, 0)
	setRunningStatus(pod, "198.19.0.5", "198.18.0.11", now)
	st := pod.Status
	if st.Phase != corev1.PodRunning || st.PodIP != "198.19.0.5" || len(st.PodIPs) != 1 || st.HostIP != "198.18.0.11" {
		t.Errorf("status = %+v", st)
	}
	if !isReady(pod) {
		t.Error("pod not Ready")
	}
	if len(st.Conditions) != 5 {
		t.Errorf("conditions = %v, want 5", st.Conditions)
	}
	if st.Conditions[0].LastTransitionTime.Unix() != 1 {
		t.Error("an unchanged condition got a new transition time")
	}
	if len(st.ContainerStatuses) != 1 || !st.ContainerStatuses[0].Ready || st.ContainerStatuses[0].State.Running == nil ||
		st.ContainerStatuses[0].ContainerID != "palisade-lab://0f4c1a2b-c" {
		t.Errorf("container statuses = %+v", st.ContainerStatuses)
	}
}

func TestNewNode(t *testing.T) {
	n := newNode("node2", "198.18.0.12")
	if n.Status.Addresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.12"}) {
		t.Errorf("addresses = %v", n.Status.Addresses)
	}
	if n.Status.Allocatable.Pods().Value() != 110 || n.Status.Capacity.Cpu().Value() != 8 || n.Status.Capacity.Memory().String() != "32Gi" {
		t.Errorf("resources = %v", n.Status.Capacity)
	}
	first := n.Status.Conditions[0]
	if first.Type != corev1.NodeReady || first.Status != corev1.ConditionTrue {
		t.Errorf("first condition = %+v, want Ready=True", first)
	}
	// A refresh moves the heartbeat but keeps the transition time.
	later := first.LastHeartbeatTime.Add(time.Minute)
	setNodeStatus(n, "198.18.0.12", later)
	got := n.Status.Conditions[0]
	if !got.LastHeartbeatTime.Time.Equal(later) || !got.LastTransitionTime.Equal(&first.LastTransitionTime) || len(n.Status.Conditions) != 4 {
		t.Errorf("after refresh: %+v (%d conditions)", got, len(n.Status.Conditions))
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pods.json")
	s, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	b := PodRecord{Namespace: "y", Name: "b", UID: "u2", Netns: "/var/run/netns/plab-pu2", IP: "198.19.0.3"}
	a := PodRecord{Namespace: "x", Name: "a", UID: "u1", Netns: "/var/run/netns/plab-pu1"}
	for _, r := range []PodRecord{b, a} {
		if err := s.put(r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadPods(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]PodRecord{a, b}, got); diff != "" {
		t.Errorf("ReadPods mismatch (-want +got):\n%s", diff)
	}
	if err := s.remove(a.Key()); err != nil {
		t.Fatal(err)
	}
	reloaded, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if keys := reloaded.keys(); len(keys) != 1 || keys[0] != "y/b" {
		t.Errorf("keys after remove = %v", keys)
	}
	if none, err := ReadPods(filepath.Join(t.TempDir(), "missing.json")); err != nil || len(none) != 0 {
		t.Errorf("ReadPods(missing) = %v, %v", none, err)
	}
}

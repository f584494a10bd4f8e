package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/noderuntime"
	"palisade.dev/palisade/test/lab/probe"
)

func TestOptionsComplete(t *testing.T) {
	t.Setenv(envDir, "")
	t.Setenv(envK8sBin, "/k8s")
	t.Setenv(envBinDir, "/pal/bin")
	o := Options{}
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	want := Options{Dir: defaultDir, Nodes: 1, K8sBinDir: "/k8s", BinDir: "/pal/bin", LabBinary: "/pal/bin/palisade-lab"}
	if diff := cmp.Diff(want, o, cmpopts.IgnoreFields(Options{}, "Progress")); diff != "" {
		t.Errorf("complete() mismatch (-want +got):\n%s", diff)
	}
	if o.Progress == nil {
		t.Error("Progress left nil")
	}
}

func TestAgentArgs(t *testing.T) {
	nd := layout.Dir("/tmp/plab").Node("node2")
	got := agentArgs("/bin/palisade-agent", "/tmp/plab/conf/palisade-agent.conf", "/tmp/plab/kubeconfig", 2, nd, "/tmp/plab/nodes/node2/ovs/db.sock", "/tmp/plab/nodes/node2/ovs/br-int.mgmt", "br-int")
	want := strings.Fields(`netns exec plab-node2 /bin/palisade-agent --config /tmp/plab/conf/palisade-agent.conf
		--kubeconfig /tmp/plab/kubeconfig --node-name node2
		--controller-url https://198.18.0.1:10349 --ovsdb unix:/tmp/plab/nodes/node2/ovs/db.sock
		--ofsocket /tmp/plab/nodes/node2/ovs/br-int.mgmt --ovs-unixctl /tmp/plab/nodes/node2/ovs/vswitchd.ctl
		--bridge br-int --datapath-type netdev
		--cni-socket /tmp/plab/nodes/node2/cni.sock --state-dir /tmp/plab/nodes/node2/agent
		--controller-token-file /tmp/plab/nodes/node2/agent/controller-token --v=2`)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("agentArgs mismatch (-want +got):\n%s", diff)
	}
}

func TestControlPlaneArgs(t *testing.T) {
	k := &pki{SAKey: "/p/sa.key", SAPub: "/p/sa.pub", TokenFile: "/p/tokens.csv", CertDir: "/p/apiserver", ServingCert: "/p/apiserver/apiserver.crt",
		FrontProxyCA: "/p/front-proxy-ca.crt", ProxyClientCert: "/p/front-proxy-client.crt", ProxyClientKey: "/p/front-proxy-client.key"}
	p := ports{EtcdClient: 2379, EtcdPeer: 2380, APIServer: 6443, KCM: 10257, Scheduler: 10259}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"etcd", etcdArgs("/d/etcd", p), []string{"--listen-client-urls=http://127.0.0.1:2379", "--unsafe-no-fsync=true", "--data-dir=/d/etcd"}},
		{"apiserver", apiserverArgs(k, p), []string{
			"--bind-address=198.18.0.1", "--advertise-address=198.18.0.1", "--secure-port=6443",
			"--service-cluster-ip-range=198.18.128.0/20", "--endpoint-reconciler-type=none",
			"--disable-admission-plugins=ServiceAccount", "--authorization-mode=Node,RBAC", "--token-auth-file=/p/tokens.csv",
			"--requestheader-client-ca-file=/p/front-proxy-ca.crt", "--requestheader-allowed-names=front-proxy-client",
			"--proxy-client-cert-file=/p/front-proxy-client.crt", "--proxy-client-key-file=/p/front-proxy-client.key",
			"--enable-aggregator-routing=true",
		}},
		{"kcm", kcmArgs("/d/kubeconfig", k, p), []string{
			"--allocate-node-cidrs=true", "--cluster-cidr=198.19.0.0/16", "--node-cidr-mask-size=24",
			"--service-cluster-ip-range=198.18.128.0/20", "--controllers=*",
			"--service-account-private-key-file=/p/sa.key", "--root-ca-file=/p/apiserver/apiserver.crt",
		}},
		{"scheduler", schedulerArgs("/d/kubeconfig", p), []string{"--kubeconfig=/d/kubeconfig", "--secure-port=10259"}},
	} {
		for _, w := range tc.want {
			if !slices.Contains(tc.args, w) {
				t.Errorf("%s args %v lack %s", tc.name, tc.args, w)
			}
		}
	}
}

func TestPodsAndEnv(t *testing.T) {
	dir := t.TempDir()
	d := layout.Dir(dir)
	write := func(node string, recs []noderuntime.PodRecord) {
		path := d.Node(node).Pods()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(recs)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("node2", []noderuntime.PodRecord{{Namespace: "x", Name: "b", Node: "node2", IP: "198.19.1.2", Netns: "/var/run/netns/plab-pb"}})
	write("node1", []noderuntime.PodRecord{
		{Namespace: "y", Name: "a", Node: "node1", Netns: "/var/run/netns/plab-pya"},
		{Namespace: "x", Name: "a", Node: "node1", IP: "198.19.0.2", Netns: "/var/run/netns/plab-pa"},
	})
	got, err := Pods(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []probe.Pod{
		{Namespace: "x", Name: "a", Node: "node1", IP: "198.19.0.2", Netns: "/var/run/netns/plab-pa"},
		{Namespace: "x", Name: "b", Node: "node2", IP: "198.19.1.2", Netns: "/var/run/netns/plab-pb"},
		{Namespace: "y", Name: "a", Node: "node1", Netns: "/var/run/netns/plab-pya"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Pods mismatch (-want +got):\n%s", diff)
	}

	// env prefers the Kubernetes binaries the lab recorded.
	if err := os.WriteFile(d.Config(), []byte(`{"k8sBinDir":"/recorded/bin"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	env, err := Env(dir, "/flag/bin")
	if err != nil {
		t.Fatal(err)
	}
	if wantEnv := "export KUBECONFIG=" + dir + "/kubeconfig\nexport PATH=/recorded/bin:$PATH\n"; env != wantEnv {
		t.Errorf("Env = %q, want %q", env, wantEnv)
	}
}

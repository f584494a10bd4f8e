package manifests

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"palisade.dev/palisade/controller"
	"palisade.dev/palisade/controller/apis/controlplane"
)

const srcDir = "../../../build/yamls"

func TestManifestIsUpToDate(t *testing.T) {
	want, err := Render(srcDir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(srcDir, Output))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("build/yamls/%s is out of date: run `make manifests`", Output)
	}
}

// TestManifestObjects decodes every document and checks the objects an
// operator relies on are there and carry the config checksum.
func TestManifestObjects(t *testing.T) {
	out, err := Render(srcDir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(out)), 4096)
	kinds := map[string]int{}
	checksums := 0
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if u.Object == nil {
			continue
		}
		kinds[u.GetKind()+"/"+u.GetName()]++
		if ann, _, _ := unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "annotations"); ann["palisade.dev/config-checksum"] != "" {
			checksums++
		}
	}
	for _, k := range []string{"Namespace/palisade-system", "ConfigMap/palisade-config", "ServiceAccount/palisade-controller",
		"ServiceAccount/palisade-agent", "ClusterRole/palisade-controller", "ClusterRole/palisade-agent",
		"Deployment/palisade-controller", "Service/palisade-controller", "DaemonSet/palisade-agent"} {
		if kinds[k] != 1 {
			t.Errorf("%s appears %d times, want once (have %v)", k, kinds[k], kinds)
		}
	}
	if checksums != 2 {
		t.Errorf("%d pod templates carry the config checksum, want 2", checksums)
	}
}

func TestChecksumFollowsConfig(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"base", "conf"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(srcDir, sub))); err != nil {
			t.Fatal(err)
		}
	}
	before, err := Render(dir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "palisade-agent.conf"), []byte("mtu: 1400\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := Render(dir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	checksum := func(s string) string {
		i := strings.Index(s, "config-checksum: ")
		return s[i : i+40]
	}
	if checksum(before) == checksum(after) {
		t.Error("changing a configuration file did not change the pods' checksum annotation")
	}
}

// TestManifestMatchesComponentDefaults keeps the manifest and the
// components' defaults in agreement where a mismatch would only show on a
// real cluster: the controller admits the agents' ServiceAccount by name,
// both find the CA ConfigMap in the namespace the manifest grants, and the
// controller's ports (its configuration's port and metrics-bind-address,
// which are its defaults) are those of its Deployment, Service and
// APIService and of the agents' --controller-url.
func TestManifestMatchesComponentDefaults(t *testing.T) {
	out, err := Render(srcDir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	conf := controllerConf(t)
	defaults := controller.NewOptions()
	if conf.Port != defaults.Port || conf.MetricsPort != port(t, defaults.MetricsBindAddress) {
		t.Errorf("palisade-controller.conf has port %d and metrics port %d; the controller's defaults are %d and %s",
			conf.Port, conf.MetricsPort, defaults.Port, defaults.MetricsBindAddress)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(out)), 4096)
	var agentSA, agentRoleNS string
	ports := map[string]int64{} // what the manifest says, by where
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch {
		case obj.GetKind() == "DaemonSet" && obj.GetName() == "palisade-agent":
			sa, _, _ := unstructured.NestedString(obj.Object, "spec", "template", "spec", "serviceAccountName")
			agentSA = obj.GetNamespace() + "/" + sa
		case obj.GetKind() == "Role" && obj.GetName() == "palisade-agent":
			agentRoleNS = obj.GetNamespace()
		}
		collectPorts(t, &obj, ports)
	}
	for where, want := range map[string]int{
		"Deployment containerPort api":     conf.Port,
		"Deployment containerPort metrics": conf.MetricsPort,
		"Deployment prometheus.io/port":    conf.MetricsPort,
		"Service port api":                 conf.Port,
		"APIService service.port":          conf.Port,
		"DaemonSet --controller-url port":  conf.Port,
	} {
		if got, ok := ports[where]; !ok || got != int64(want) {
			t.Errorf("%s is %d (found: %v), want %d as in palisade-controller.conf", where, got, ok, want)
		}
	}
	if target := ports["Service targetPort is api"]; target != 1 {
		t.Errorf("the Service's port api does not target the container port api")
	}
	if want := controller.NewOptions().AgentServiceAccount; agentSA != want {
		t.Errorf("the agent DaemonSet runs as %q; the controller admits %q by default", agentSA, want)
	}
	if agentRoleNS != controlplane.CAConfigMapNamespace {
		t.Errorf("the agent's Role (reading the CA) is in namespace %q; the CA is published in %q", agentRoleNS, controlplane.CAConfigMapNamespace)
	}
}

// controllerPorts are the ports of the shipped controller configuration.
type controllerPorts struct{ Port, MetricsPort int }

func controllerConf(t *testing.T) controllerPorts {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(srcDir, "conf", "palisade-controller.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Port               int    `json:"port"`
		MetricsBindAddress string `json:"metrics-bind-address"`
	}
	if err := yaml.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Port == 0 || conf.MetricsBindAddress == "" {
		t.Fatalf("palisade-controller.conf sets no port or metrics-bind-address: %+v", conf)
	}
	return controllerPorts{Port: conf.Port, MetricsPort: port(t, conf.MetricsBindAddress)}
}

func port(t *testing.T, hostPort string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// collectPorts records the controller's ports as obj gives them.
func collectPorts(t *testing.T, obj *unstructured.Unstructured, ports map[string]int64) {
	t.Helper()
	switch {
	case obj.GetKind() == "Deployment" && obj.GetName() == "palisade-controller":
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports["Deployment containerPort "+p.Name] = int64(p.ContainerPort)
			}
		}
		if p, err := strconv.Atoi(d.Spec.Template.Annotations["prometheus.io/port"]); err == nil {
			ports["Deployment prometheus.io/port"] = int64(p)
		}
	case obj.GetKind() == "Service" && obj.GetName() == "palisade-controller":
		var svc corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &svc); err != nil {
			t.Fatal(err)
		}
		for _, p := range svc.Spec.Ports {
			ports["Service port "+p.Name] = int64(p.Port)
			if p.Name == "api" && p.TargetPort.String() == "api" {
				ports["Service targetPort is api"] = 1
			}
		}
	case obj.GetKind() == "APIService":
		var a struct {
			Spec struct {
				Service struct {
					Port int32 `json:"port"`
				} `json:"service"`
			} `json:"spec"`
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &a); err != nil {
			t.Fatal(err)
		}
		ports["APIService service.port"] = int64(a.Spec.Service.Port)
	case obj.GetKind() == "DaemonSet" && obj.GetName() == "palisade-agent":
		var ds appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &ds); err != nil {
			t.Fatal(err)
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "--controller-url="); ok {
					u, err := url.Parse(v)
					if err != nil {
						t.Fatal(err)
					}
					p, _ := strconv.Atoi(u.Port())
					ports["DaemonSet --controller-url port"] = int64(p)
				}
			}
		}
	}
}

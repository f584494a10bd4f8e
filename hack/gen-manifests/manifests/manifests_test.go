package manifests

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

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
// and both find the CA ConfigMap in the namespace the manifest grants.
func TestManifestMatchesComponentDefaults(t *testing.T) {
	out, err := Render(srcDir, DefaultValues)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader([]byte(out)), 4096)
	var agentSA, agentRoleNS string
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
	}
	if want := controller.NewOptions().AgentServiceAccount; agentSA != want {
		t.Errorf("the agent DaemonSet runs as %q; the controller admits %q by default", agentSA, want)
	}
	if agentRoleNS != controlplane.CAConfigMapNamespace {
		t.Errorf("the agent's Role (reading the CA) is in namespace %q; the CA is published in %q", agentRoleNS, controlplane.CAConfigMapNamespace)
	}
}

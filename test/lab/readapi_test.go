package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// TestAPIServiceMatchesManifest checks that the lab creates the APIService
// the manifest ships.
func TestAPIServiceMatchesManifest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "build", "yamls", "base", "21-controlplane-api.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var shipped map[string]any
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if obj["kind"] == "APIService" {
			shipped = obj
		}
	}
	if shipped == nil {
		t.Fatal("the manifest has no APIService")
	}
	// YAML numbers decode as float64; compare through JSON types.
	lab, err := yaml.Marshal(apiService().Object)
	if err != nil {
		t.Fatal(err)
	}
	var labObj map[string]any
	if err := yaml.Unmarshal(lab, &labObj); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(shipped, labObj); diff != "" {
		t.Errorf("the lab's APIService differs from the manifest's (-manifest +lab):\n%s", diff)
	}
}

//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"palisade.dev/palisade/test/doctest"
	"palisade.dev/palisade/test/lab"
)

// installDoc is the newcomer's guide; every command block in it runs here.
const installDoc = "docs/install.md"

// TestInstallDoc runs every command of docs/install.md as written: the
// "cluster" blocks against a lab's kube-apiserver standing in for the
// reader's cluster (the lab's node runtime stands in for the kubelet, so the
// manifest's workloads are scheduled and reported running, not run), and
// the "lab" blocks as one script, from `make build` to `palisade-lab down`.
func TestInstallDoc(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, installDoc))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := doctest.Parse(string(md))
	if err != nil {
		t.Fatalf("%s: %v", installDoc, err)
	}
	kinds := map[string]int{}
	for _, b := range blocks {
		kinds[b.Kind]++
	}
	for k := range kinds {
		if k != "cluster" && k != "lab" {
			t.Fatalf("%s: doctest kind %q: this test runs only \"cluster\" and \"lab\" blocks", installDoc, k)
		}
	}
	if kinds["cluster"] == 0 || kinds["lab"] == 0 {
		t.Fatalf("%s: want both cluster and lab blocks, have %v", installDoc, kinds)
	}

	t.Run("cluster", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		l := startLab(t, ctx, 1)
		t.Cleanup(func() { os.Remove(filepath.Join(root, "palisade.yml")) })
		env := append(os.Environ(), "KUBECONFIG="+l.Kubeconfig(),
			"PATH="+lab.DefaultK8sBinDir()+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := doctest.Run(ctx, root, env, doctest.Script(installDoc, blocks, "cluster"))
		t.Logf("output:\n%s", out)
		if err != nil {
			t.Fatalf("%s, cluster part: %v", installDoc, err)
		}
		for _, want := range []string{
			`daemon set "palisade-agent" successfully rolled out`,
			`deployment "palisade-controller" successfully rolled out`,
			"apiservice.apiregistration.k8s.io/v1alpha1.controlplane.palisade.dev condition met",
			`namespace "palisade-system" deleted`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("the cluster part's output lacks %q", want)
			}
		}
	})

	t.Run("lab", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		dir, err := os.MkdirTemp("", "plab")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(dir); err != nil { // palisade-lab up creates it
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// The document ends with `palisade-lab down`; this is for a
			// failure half-way (down is idempotent).
			cmd := exec.Command(filepath.Join(root, "bin", "palisade-lab"), "down", "--dir", dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("palisade-lab down: %v\n%s", err, out)
			}
		})
		env := append(os.Environ(), "PALISADE_LAB_DIR="+dir)
		out, err := doctest.Run(ctx, root, env, doctest.Script(installDoc, blocks, "lab"))
		t.Logf("output:\n%s", out)
		if err != nil {
			dumpLogs(t, dir)
			t.Fatalf("%s, lab part: %v", installDoc, err)
		}
		// What the document says the commands show (its output examples
		// and prose), in the order it says it.
		for _, want := range []string{
			"networkpolicy.networking.k8s.io/b-from-a created",
			"x/b-from-a", // get networkpolicies
			"Allowed: x/a",
			"Denied: x/c",
			"ingress  x/b  x/b-from-a   denied (no rule allows)",
			"conjunction(1,1/3)",        // get flows --policy
			"Verdict: output to port",   // trace x/a -> x/b
			"(pod x/b) in table Output", //
			"Verdict: drop in table IngressDefault: Ingress isolation: no ingress rule of x/b-from-a allows it",
			"palisade_agent_rule_sessions_total{", // the agent's metrics
			"table=IngressRule",                   // ovs-ofctl --names
			"palisade_controller_leader 1",        // the controller's metrics
			"palisade_controller_networkpolicies 1",
		} {
			i := strings.Index(out, want)
			if i < 0 {
				t.Errorf("the lab part's output lacks %q", want)
				continue
			}
			out = out[i+len(want):]
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("the lab's directory %s is still there after the document's `palisade-lab down` (stat: %v)", dir, err)
		}
	})
}

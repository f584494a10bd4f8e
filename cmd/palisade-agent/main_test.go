package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"palisade.dev/palisade/agent"
	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestShippedConfig loads the configuration file the manifest ships through
// the program's real flag set with the DaemonSet's arguments: every key
// must be one of its flags, and the options must be valid.
func TestShippedConfig(t *testing.T) {
	data, err := os.ReadFile("../../build/yamls/base/30-agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(data, &ds); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ds.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == "palisade-agent" })
	if i < 0 {
		t.Fatal("the DaemonSet has no container palisade-agent")
	}
	var args []string
	for _, a := range ds.Spec.Template.Spec.Containers[i].Args {
		a = strings.ReplaceAll(a, "$(NODE_NAME)", "node1")
		a = strings.Replace(a, "--config=/etc/palisade/", "--config=../../build/yamls/conf/", 1)
		if !strings.HasPrefix(a, "--v=") { // klog's verbosity would apply to this whole test binary
			args = append(args, a)
		}
	}
	o := agent.NewOptions()
	if err := command(o).Parse(args); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if o.NodeName != "node1" || o.ControllerURL == "" {
		t.Errorf("the DaemonSet's arguments %q set no --node-name or --controller-url", args)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("the shipped configuration is invalid: %v", err)
	}
}

// TestCommandLine runs the real main: help lists every flag with its text
// on stdout and exits 0; bad command lines exit 2 with the reason on stderr.
func TestCommandLine(t *testing.T) {
	clitest.Run(t, []clitest.Case{
		{Name: "help", Args: []string{"--help"}, Stdout: []string{"Usage: palisade-agent [flags]", "--config", "--node-name", "--controller-url"}},
		{Name: "unknown flag", Args: []string{"--bogus"}, Code: 2, Stderr: []string{"unknown flag: --bogus"}},
		{Name: "stray argument", Args: []string{"run"}, Code: 2, Stderr: []string{`unexpected arguments ["run"]`}},
		{Name: "required flags", Code: 2, Stderr: []string{"--node-name is required"}},
		{Name: "missing config file", Args: []string{"--config=/nonexistent/palisade.conf"}, Code: 2, Stderr: []string{"reading configuration"}},
	}, command(agent.NewOptions()).Flags)
}

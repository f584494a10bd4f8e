package main

import (
	"testing"

	"palisade.dev/palisade/controller"
	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestShippedConfig loads the configuration file the manifest ships through
// the program's real flag set: every key must be one of its flags, and the
// options must be valid (as the Deployment runs it, with POD_NAMESPACE).
func TestShippedConfig(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "palisade-system")
	o := controller.NewOptions()
	if err := command(o).Parse([]string{"--config=../../build/yamls/conf/palisade-controller.conf"}); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("the shipped configuration is invalid: %v", err)
	}
}

// TestCommandLine runs the real main: help lists every flag with its text
// on stdout and exits 0; bad command lines exit 2 with the reason on stderr.
func TestCommandLine(t *testing.T) {
	clitest.Run(t, []clitest.Case{
		{Name: "help", Args: []string{"--help"}, Stdout: []string{"Usage: palisade-controller [flags]", "--config", "--leader-elect", "--metrics-bind-address"}},
		{Name: "-h", Args: []string{"-h"}, Stdout: []string{"Usage: palisade-controller [flags]"}},
		{Name: "unknown flag", Args: []string{"--bogus"}, Code: 2, Stderr: []string{"unknown flag: --bogus"}},
		{Name: "stray argument", Args: []string{"serve"}, Code: 2, Stderr: []string{`unexpected arguments ["serve"]`}},
		{Name: "invalid option", Args: []string{"--port=0"}, Code: 2, Stderr: []string{"--port 0 is not in 1-65535"}},
		{Name: "missing config file", Args: []string{"--config=/nonexistent/palisade.conf"}, Code: 2, Stderr: []string{"reading configuration"}},
	}, command(controller.NewOptions()).Flags)
}

package main

import (
	"testing"

	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestCommandLine runs the real main (test/lab/cli checks every
// subcommand's flags): help exits 0 on stdout, bad command lines exit 2
// with the reason on stderr. None of these cases starts a lab.
func TestCommandLine(t *testing.T) {
	clitest.Run(t, []clitest.Case{
		{Name: "help", Args: []string{"--help"}, Stdout: []string{"palisade-lab up [--nodes N] [--dir DIR]"}},
		{Name: "no command", Code: 2, Stdout: []string{"Usage:"}},
		{Name: "unknown command", Args: []string{"sideways"}, Code: 2, Stderr: []string{`unknown command "sideways"`}},
		{Name: "subcommand help", Args: []string{"up", "--help"}, Stdout: []string{"Usage: palisade-lab up [flags]"}},
		{Name: "unknown flag", Args: []string{"up", "--bogus"}, Code: 2, Stderr: []string{"palisade-lab up: unknown flag: --bogus"}},
		// `env` only reads: a regression here must not run a real `down`.
		{Name: "stray argument", Args: []string{"env", "--dir", "/nonexistent/plab", "now"}, Code: 2, Stderr: []string{`unexpected arguments ["now"]`}},
	}, nil)
}

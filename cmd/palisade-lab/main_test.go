package main

import (
	"strings"
	"testing"

	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestCommandLine runs the real main (test/lab/cli checks every
// subcommand's flags): help exits 0 on stdout, bad command lines exit 2
// with the reason on stderr. None of these cases starts a lab.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "help", args: []string{"--help"}, wantStdout: "palisade-lab up [--nodes N] [--dir DIR]"},
		{name: "no command", wantCode: 2, wantStdout: "Usage:"},
		{name: "unknown command", args: []string{"sideways"}, wantCode: 2, wantStderr: `unknown command "sideways"`},
		{name: "subcommand help", args: []string{"up", "--help"}, wantStdout: "Usage: palisade-lab up [flags]"},
		{name: "unknown flag", args: []string{"up", "--bogus"}, wantCode: 2, wantStderr: "palisade-lab up: unknown flag: --bogus"},
		// `env` only reads: a regression here must not run a real `down`.
		{name: "stray argument", args: []string{"env", "--dir", "/nonexistent/plab", "now"}, wantCode: 2, wantStderr: `unexpected arguments ["now"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clitest.Exec(t, nil, tc.args...)
			if r.Code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.Code, tc.wantCode, r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stdout, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, r.Stdout)
			}
			if !strings.Contains(r.Stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, r.Stderr)
			}
		})
	}
}

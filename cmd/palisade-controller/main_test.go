package main

import (
	"strings"
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
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{name: "help", args: []string{"--help"}, wantStdout: []string{"Usage: palisade-controller [flags]", "--config", "--leader-elect", "--metrics-bind-address"}},
		{name: "-h", args: []string{"-h"}, wantStdout: []string{"Usage: palisade-controller [flags]"}},
		{name: "unknown flag", args: []string{"--bogus"}, wantCode: 2, wantStderr: "unknown flag: --bogus"},
		{name: "stray argument", args: []string{"serve"}, wantCode: 2, wantStderr: `unexpected arguments ["serve"]`},
		{name: "invalid option", args: []string{"--port=0"}, wantCode: 2, wantStderr: "--port 0 is not in 1-65535"},
		{name: "missing config file", args: []string{"--config=/nonexistent/palisade.conf"}, wantCode: 2, wantStderr: "reading configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clitest.Exec(t, nil, tc.args...)
			if r.Code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.Code, tc.wantCode, r.Stdout, r.Stderr)
			}
			for _, s := range tc.wantStdout {
				if !strings.Contains(r.Stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.Stdout)
				}
			}
			if !strings.Contains(r.Stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, r.Stderr)
			}
			if tc.wantCode == 0 {
				clitest.FlagsDocumented(t, command(controller.NewOptions()).Flags, r.Stdout)
			}
		})
	}
}

package main

import (
	"strings"
	"testing"

	"palisade.dev/palisade/cni/protocol"
	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestCommandLine runs the real main as a person would (no CNI_COMMAND)
// and as a runtime would with a bad command.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name       string
		env, args  []string
		wantCode   int
		wantStdout string
		wantStderr []string
	}{
		{name: "no command", env: []string{"CNI_COMMAND="},
			wantStderr: []string{"CNI plugin palisade-cni", "CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION)", protocol.DefaultSocketPath, "CNI protocol versions supported: 0.1.0"}},
		{name: "help", env: []string{"CNI_COMMAND="}, args: []string{"--help"}, wantStderr: []string{"CNI plugin palisade-cni", "It takes no flags or arguments."}},
		{name: "bad invocation", env: []string{"CNI_COMMAND=BOGUS", "CNI_CONTAINERID=c", "CNI_NETNS=/x", "CNI_IFNAME=eth0", "CNI_PATH=/x"},
			wantCode: 1, wantStdout: `"msg": `}, // a CNI error, as JSON on stdout
		{name: "version", env: []string{"CNI_COMMAND=VERSION"}, args: nil, wantStdout: `"supportedVersions"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clitest.Exec(t, tc.env, tc.args...)
			if r.Code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.Code, tc.wantCode, r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stdout, tc.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.wantStdout, r.Stdout)
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
				}
			}
		})
	}
}

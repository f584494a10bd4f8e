package main

import (
	"testing"

	"palisade.dev/palisade/cni/protocol"
	"palisade.dev/palisade/test/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestCommandLine runs the real main as a person would (no CNI_COMMAND)
// and as a runtime would with a bad command.
func TestCommandLine(t *testing.T) {
	clitest.Run(t, []clitest.Case{
		{Name: "no command", Env: []string{"CNI_COMMAND="},
			Stderr: []string{"CNI plugin palisade-cni", "CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION)", protocol.DefaultSocketPath, "CNI protocol versions supported: 0.1.0"}},
		{Name: "help", Env: []string{"CNI_COMMAND="}, Args: []string{"--help"}, Stderr: []string{"CNI plugin palisade-cni", "It takes no flags or arguments."}},
		{Name: "bad invocation", Env: []string{"CNI_COMMAND=BOGUS", "CNI_CONTAINERID=c", "CNI_NETNS=/x", "CNI_IFNAME=eth0", "CNI_PATH=/x"},
			Code: 1, Stdout: []string{`"msg": `}}, // a CNI error, as JSON on stdout
		{Name: "version", Env: []string{"CNI_COMMAND=VERSION"}, Stdout: []string{`"supportedVersions"`}},
	}, nil)
}

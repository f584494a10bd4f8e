package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"palisade.dev/palisade/test/clitest"
)

// TestHelp checks that `palisade-lab COMMAND --help` exits 0 and lists
// every flag of the command with its text, and that the top-level help
// names every visible command.
func TestHelp(t *testing.T) {
	var top bytes.Buffer
	if code := Run(context.Background(), []string{"--help"}, &top, &top); code != 0 {
		t.Fatalf("--help: exit %d\n%s", code, top.String())
	}
	for _, cmd := range commands {
		t.Run(cmd.name, func(t *testing.T) {
			if !cmd.hidden && !strings.Contains(top.String(), "palisade-lab "+cmd.name+" ") {
				t.Errorf("the top-level help does not name %q:\n%s", cmd.name, top.String())
			}
			var stdout, stderr bytes.Buffer
			if code := Run(context.Background(), []string{cmd.name, "--help"}, &stdout, &stderr); code != 0 {
				t.Fatalf("%s --help: exit %d, stderr %s", cmd.name, code, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), "Usage: palisade-lab "+cmd.name+" [flags]") {
				t.Errorf("%s --help starts with %q", cmd.name, stdout.String())
			}
			fs := pflag.NewFlagSet(cmd.name, pflag.ContinueOnError)
			addKlogFlags(fs)
			cmd.setup(fs)
			clitest.FlagsDocumented(t, fs, stdout.String())
		})
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelpNamesEveryCommand checks that the top-level help lists every
// registered command with its summary, and that each command answers
// --help with its usage and exit 0.
func TestHelpNamesEveryCommand(t *testing.T) {
	var top, topErr bytes.Buffer
	if code := run([]string{"--help"}, &top, &topErr); code != 0 {
		t.Fatalf("--help: exit %d, stderr %s", code, topErr.String())
	}
	if len(commands) == 0 {
		t.Fatal("no commands are registered")
	}
	for name, c := range commands {
		t.Run(name, func(t *testing.T) {
			if c.summary == "" {
				t.Errorf("command %q has no summary", name)
			}
			if !strings.Contains(top.String(), "  "+name+" ") || !strings.Contains(top.String(), c.summary) {
				t.Errorf("the top-level help does not list %q with its summary %q:\n%s", name, c.summary, top.String())
			}
			var out, errb bytes.Buffer
			if code := run([]string{name, "--help"}, &out, &errb); code != 0 {
				t.Fatalf("%s --help: exit %d, stderr %s", name, code, errb.String())
			}
			if !strings.Contains(out.String(), "Usage: palisadectl "+name) {
				t.Errorf("%s --help lacks its usage line:\n%s", name, out.String())
			}
		})
	}
}

func TestUnknownTopLevelFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown flag "--bogus"`) {
		t.Errorf("--bogus: exit %d, stderr %q; want 2 and unknown flag", code, errb.String())
	}
}

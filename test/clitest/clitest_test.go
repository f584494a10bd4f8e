package clitest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// recorder collects the errors FlagsDocumented reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestFlagsDocumented(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("documented", "", "Shown in help.")
	fs.String("silent", "", "")
	fs.Int("missing", 0, "Not in help.")
	fs.Bool("secret", false, "Hidden.")
	_ = fs.MarkHidden("secret")
	help := "      --documented string   Shown in help.\n      --silent string\n"
	r := &recorder{TB: t}
	FlagsDocumented(r, fs, help)
	got := strings.Join(r.errs, "\n")
	for _, want := range []string{"--silent has no help text", "help does not list --missing"} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if len(r.errs) != 2 {
		t.Errorf("%d errors, want 2 (documented and hidden flags pass):\n%s", len(r.errs), got)
	}
}

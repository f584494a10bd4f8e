// Package clitest tests programs' command lines: it runs a program's real
// main in a child process (the test binary itself, so exit codes and
// output are the program's) and checks that help documents every flag.
package clitest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// mainEnv tells a test binary started by Exec to run the program's main.
const mainEnv = "PALISADE_CLITEST_MAIN"

// Main runs main instead of the tests when Exec started this test binary,
// and the tests otherwise. Call it from TestMain.
func Main(m *testing.M, main func()) {
	if os.Getenv(mainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Result is what a program run by Exec did.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Exec runs the program's main (see Main) with args and the extra
// environment variables env ("NAME=value").
func Exec(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), mainEnv+"=1"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running %v: %v", args, err)
	}
	return Result{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// Case is one run of the program and what it must do.
type Case struct {
	Name      string
	Env, Args []string
	// Code is the exit code it must end with.
	Code int
	// Stdout and Stderr hold text each output must contain.
	Stdout, Stderr []string
}

// Run runs each case as a subtest (see Exec) and checks its exit code and
// output; for a case that exits 0, every visible flag of flags (if not
// nil) must be documented in its standard output (FlagsDocumented).
func Run(t *testing.T, cases []Case, flags *pflag.FlagSet) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			r := Exec(t, tc.Env, tc.Args...)
			if r.Code != tc.Code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.Code, tc.Code, r.Stdout, r.Stderr)
			}
			for _, s := range tc.Stdout {
				if !strings.Contains(r.Stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.Stdout)
				}
			}
			for _, s := range tc.Stderr {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
				}
			}
			if tc.Code == 0 && flags != nil {
				FlagsDocumented(t, flags, r.Stdout)
			}
		})
	}
}

// FlagsDocumented fails t for each visible flag of fs that has no help text
// or that help does not list with its help text.
func FlagsDocumented(t testing.TB, fs *pflag.FlagSet, help string) {
	t.Helper()
	n := 0
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		n++
		_, usage := pflag.UnquoteUsage(f)
		switch {
		case strings.TrimSpace(usage) == "":
			t.Errorf("flag --%s has no help text", f.Name)
		case !strings.Contains(help, "--"+f.Name+" ") && !strings.Contains(help, "--"+f.Name+"\n"):
			t.Errorf("help does not list --%s:\n%s", f.Name, help)
		case !strings.Contains(help, usage):
			t.Errorf("help does not show the text of --%s (%q):\n%s", f.Name, usage, help)
		}
	})
	if n == 0 {
		t.Errorf("the flag set has no visible flags")
	}
}

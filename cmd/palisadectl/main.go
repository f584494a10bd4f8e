// Command palisadectl inspects Palisade: what the controller computed, which
// flows realize a policy on a node, and why a packet is allowed or dropped.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// command is one palisadectl subcommand.
type command struct {
	name, summary string
	// run parses its own flags from args and writes to out.
	run func(args []string, out io.Writer) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

func usage(w io.Writer) {
	fmt.Fprintf(w, "palisadectl inspects Palisade, the Open vSwitch NetworkPolicy implementation.\n\nUsage: palisadectl COMMAND [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'palisadectl COMMAND --help' for a command's flags.\n")
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		what := "command"
		if strings.HasPrefix(args[0], "-") {
			what = "flag"
		}
		fmt.Fprintf(stderr, "palisadectl: unknown %s %q\n\n", what, args[0])
		usage(stderr)
		return 2
	}
	if err := c.run(args[1:], stdout); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "palisadectl %s: %v\n", c.name, err)
		return 1
	}
	return 0
}

// flagSet returns a flag set for a subcommand that prints its usage to out.
func flagSet(name, summary string, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("palisadectl "+name, pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\n\nUsage: palisadectl %s [flags]\n\nFlags:\n%s", summary, name, fs.FlagUsages())
	}
	return fs
}

// outputFlag registers -o with the given formats.
func outputFlag(fs *pflag.FlagSet, def string) *string {
	return fs.StringP("output", "o", def, "Output format: "+strings.Join(outputFormats, "|")+".")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

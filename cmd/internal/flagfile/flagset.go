package flagfile

import (
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// Command is the flag set of a Palisade program: its own options, klog's
// flags and --config.
type Command struct {
	Flags   *pflag.FlagSet
	summary string
	config  *string
}

// New builds the flag set of program; add registers the program's options.
func New(program, summary string, add func(*pflag.FlagSet)) *Command {
	fs := pflag.NewFlagSet(program, pflag.ContinueOnError)
	add(fs)
	c := &Command{Flags: fs, summary: summary, config: Register(fs)}
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	// Start prints the help (on stdout) and errors (on stderr) itself.
	fs.Usage = func() {}
	return c
}

// Usage writes the program's help to w.
func (c *Command) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n%s\n\nFlags:\n%s", c.Flags.Name(), c.summary, c.Flags.FlagUsages())
}

// Parse parses args, then applies the --config file to the flags args did
// not set.
func (c *Command) Parse(args []string) error {
	if err := c.Flags.Parse(args); err != nil {
		return err
	}
	if *c.config == "" {
		return nil
	}
	return Load(c.Flags, *c.config)
}

// Start parses args and validates the options. It returns run true when
// the program should run; otherwise the exit code: 0 after --help (the
// help on stdout), 2 for a bad flag, stray arguments, a bad --config file
// or invalid options (the error on stderr).
func (c *Command) Start(args []string, validate func() error, stdout, stderr io.Writer) (run bool, code int) {
	program := c.Flags.Name()
	err := c.Parse(args)
	switch {
	case errors.Is(err, pflag.ErrHelp):
		c.Usage(stdout)
		return false, 0
	case err == nil && c.Flags.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q (%s takes only flags)", c.Flags.Args(), program)
	case err == nil:
		err = validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for its flags.\n", program, err, program)
		return false, 2
	}
	return true, 0
}

// Main is a daemon's whole main: it parses args (see Start for the exit
// codes), then runs run with a context that ends on SIGINT or SIGTERM and
// logs through logger, and exits 1 if run fails for any other reason than
// that signal.
func (c *Command) Main(args []string, validate func() error, logger klog.Logger, run func(context.Context) error) {
	program := c.Flags.Name()
	if ok, code := c.Start(args, validate, os.Stdout, os.Stderr); !ok {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, logger)
	if err := run(ctx); err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, program+" failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

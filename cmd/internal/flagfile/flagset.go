package flagfile

import (
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// Command is the flag set of a Palisade program: its own options, klog's
// flags and --config.
type Command struct {
	Flags  *pflag.FlagSet
	config *string
}

// New builds the flag set of program; add registers the program's options.
func New(program, summary string, add func(*pflag.FlagSet)) *Command {
	fs := pflag.NewFlagSet(program, pflag.ContinueOnError)
	add(fs)
	c := &Command{Flags: fs, config: Register(fs)}
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: %s [flags]\n\n%s\n\nFlags:\n%s", program, summary, fs.FlagUsages())
	}
	return c
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

// Main is a daemon's whole main: it parses args (exit 0 on --help, 2 on bad
// flags or invalid options), then runs run with a context that ends on
// SIGINT or SIGTERM and logs through logger, and exits 1 if run fails for
// any other reason than that signal.
func (c *Command) Main(args []string, validate func() error, logger klog.Logger, run func(context.Context) error) {
	program := c.Flags.Name()
	if err := c.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		os.Exit(2)
	}
	if err := validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		os.Exit(2)
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

package flagfile

import (
	goflag "flag"
	"fmt"
	"os"

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

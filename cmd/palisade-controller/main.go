// Command palisade-controller computes Palisade's internal NetworkPolicy model
// from the Kubernetes API and serves each node's span to the agents.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/cmd/internal/flagfile"
	"palisade.dev/palisade/controller"
)

func command(opts *controller.Options) *flagfile.Command {
	return flagfile.New("palisade-controller",
		"The Palisade controller: turns NetworkPolicies into groups and rules and serves each node its share.",
		opts.AddFlags)
}

func main() {
	opts := controller.NewOptions()
	if err := command(opts).Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "palisade-controller: %v\n", err)
		os.Exit(2)
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "palisade-controller: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())
	if err := controller.Run(ctx, opts); err != nil {
		klog.FromContext(ctx).Error(err, "palisade-controller failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// Command palisade-controller computes Palisade's internal NetworkPolicy model
// from the Kubernetes API and serves each node's span to the agents.
package main

import (
	"context"
	goflag "flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller"
)

func main() {
	opts := controller.NewOptions()
	fs := pflag.NewFlagSet("palisade-controller", pflag.ExitOnError)
	opts.AddFlags(fs)
	klogFlags := goflag.NewFlagSet("klog", goflag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:]) // ExitOnError: Parse exits on bad flags.
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

// Command palisade-agent runs on every node: it attaches pods to the OVS
// bridge for the CNI plugin and turns the node's share of the policy model
// into OpenFlow.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent"
)

func main() {
	o := agent.NewOptions()
	fs := pflag.NewFlagSet("palisade-agent", pflag.ExitOnError)
	o.AddFlags(fs)
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: palisade-agent [flags]\n\nThe Palisade node agent.\n\n%s", fs.FlagUsages())
	}
	_ = fs.Parse(os.Args[1:])
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "palisade-agent: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx = klog.NewContext(ctx, klog.Background().WithValues("node", o.NodeName))
	if err := agent.Run(ctx, o); err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "Agent failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

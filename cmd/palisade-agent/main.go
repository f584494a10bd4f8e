// Command palisade-agent runs on every node: it attaches pods to the OVS
// bridge for the CNI plugin and turns the node's share of the policy model
// into OpenFlow.
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

	"palisade.dev/palisade/agent"
	"palisade.dev/palisade/cmd/internal/flagfile"
)

func command(o *agent.Options) *flagfile.Command {
	return flagfile.New("palisade-agent",
		"The Palisade node agent: pod networking for the CNI plugin and the node's policy flows in Open vSwitch.",
		o.AddFlags)
}

func main() {
	o := agent.NewOptions()
	if err := command(o).Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "palisade-agent: %v\n", err)
		os.Exit(2)
	}
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

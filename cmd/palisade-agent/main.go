// Command palisade-agent runs on every node: it attaches pods to the OVS
// bridge for the CNI plugin and turns the node's share of the policy model
// into OpenFlow.
package main

import (
	"context"
	"os"

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
	cmd := command(o)
	cmd.Main(os.Args[1:], o.Validate, klog.Background(),
		func(ctx context.Context) error {
			ctx = klog.NewContext(ctx, klog.FromContext(ctx).WithValues("node", o.NodeName))
			return agent.Run(ctx, o)
		})
}

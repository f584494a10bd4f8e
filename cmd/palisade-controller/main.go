// Command palisade-controller computes Palisade's internal NetworkPolicy model
// from the Kubernetes API and serves each node's span to the agents.
package main

import (
	"context"
	"os"

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
	command(opts).Main(os.Args[1:], opts.Validate, klog.Background(),
		func(ctx context.Context) error { return controller.Run(ctx, opts) })
}

// Command palisade-lab runs a one-machine Kubernetes cluster with real Open
// vSwitch per node for Palisade's demos and end-to-end tests. See
// test/lab/README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"palisade.dev/palisade/test/lab/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

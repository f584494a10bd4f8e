// Package controller wires the Palisade controller together: it watches Pods,
// Namespaces and NetworkPolicies, computes the internal policy model
// (package networkpolicy) and serves each node's span to the agents (package
// apiserver).
package controller

import (
	"errors"
	"fmt"
	"net"

	"github.com/spf13/pflag"
)

// DefaultPort is the port of the agent-facing API.
const DefaultPort = 10349

// Options are the controller's command-line options.
type Options struct {
	// Kubeconfig is the path of a kubeconfig file; empty means in-cluster
	// configuration.
	Kubeconfig string
	// BindAddress is the IP address the agent-facing API listens on.
	BindAddress string
	// Port is the port the agent-facing API listens on.
	Port int
}

// NewOptions returns the default options.
func NewOptions() *Options {
	return &Options{BindAddress: "0.0.0.0", Port: DefaultPort}
}

// AddFlags registers the options' flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig file; empty uses the in-cluster configuration.")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "IP address the agent-facing API listens on.")
	fs.IntVar(&o.Port, "port", o.Port, "Port the agent-facing API listens on.")
}

// Validate checks the options.
func (o *Options) Validate() error {
	var errs []error
	if net.ParseIP(o.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--bind-address %q is not an IP address", o.BindAddress))
	}
	if o.Port < 1 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is not in 1-65535", o.Port))
	}
	return errors.Join(errs...)
}

// Address is the host:port the agent-facing API listens on.
func (o *Options) Address() string {
	return net.JoinHostPort(o.BindAddress, fmt.Sprint(o.Port))
}

// Package controller wires the Palisade controller together: it watches Pods,
// Namespaces and NetworkPolicies, maintains the internal policy model
// (package networkpolicy) and serves each node's span to the agents over
// authenticated TLS (packages apiserver and certificate).
package controller

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

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
	// CertDir holds the CA (ca.crt, ca.key); empty keeps a new CA in
	// memory for the life of the process.
	CertDir string
	// TLSSANs are extra host names and IP addresses of the serving
	// certificate.
	TLSSANs []string
	// AgentServiceAccount is the "namespace/name" of the agents'
	// ServiceAccount: only its tokens may watch.
	AgentServiceAccount string
	// TokenReviewTTL is how long a TokenReview result is reused.
	TokenReviewTTL time.Duration
}

// NewOptions returns the default options.
func NewOptions() *Options {
	return &Options{
		BindAddress:         "0.0.0.0",
		Port:                DefaultPort,
		AgentServiceAccount: "kube-system/palisade-agent",
		TokenReviewTTL:      10 * time.Second,
	}
}

// AddFlags registers the options' flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig file; empty uses the in-cluster configuration.")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "IP address the agent-facing API listens on.")
	fs.IntVar(&o.Port, "port", o.Port, "Port the agent-facing API listens on.")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "Directory of the CA (ca.crt, ca.key), created if missing; empty keeps a new CA in memory. The CA is published in ConfigMap kube-system/palisade-ca.")
	fs.StringSliceVar(&o.TLSSANs, "tls-san", o.TLSSANs, "Extra host names and IP addresses of the serving certificate (the bind address, when specific, and the host name are always included).")
	fs.StringVar(&o.AgentServiceAccount, "agent-service-account", o.AgentServiceAccount, "namespace/name of the agents' ServiceAccount; only its node-bound tokens may watch.")
	fs.DurationVar(&o.TokenReviewTTL, "token-review-ttl", o.TokenReviewTTL, "How long a TokenReview result is reused for the same token.")
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
	if ns, name, ok := strings.Cut(o.AgentServiceAccount, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		errs = append(errs, fmt.Errorf("--agent-service-account %q is not namespace/name", o.AgentServiceAccount))
	}
	for _, san := range o.TLSSANs {
		if strings.TrimSpace(san) == "" {
			errs = append(errs, errors.New("--tls-san has an empty entry"))
		}
	}
	if o.TokenReviewTTL < 0 {
		errs = append(errs, fmt.Errorf("--token-review-ttl %s is negative", o.TokenReviewTTL))
	}
	return errors.Join(errs...)
}

// Address is the host:port the agent-facing API listens on.
func (o *Options) Address() string {
	return net.JoinHostPort(o.BindAddress, fmt.Sprint(o.Port))
}

// agentServiceAccount splits AgentServiceAccount (validated).
func (o *Options) agentServiceAccount() (namespace, name string) {
	namespace, name, _ = strings.Cut(o.AgentServiceAccount, "/")
	return namespace, name
}

// servingHosts are the names of the serving certificate: the specific bind
// address, the host name, then TLSSANs.
func (o *Options) servingHosts() []string {
	var hosts []string
	if ip := net.ParseIP(o.BindAddress); ip != nil && !ip.IsUnspecified() {
		hosts = append(hosts, ip.String())
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return append(hosts, o.TLSSANs...)
}

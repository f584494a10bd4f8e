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
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/leaderelection"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// DefaultPort is the port of the agent-facing API.
const DefaultPort = 10349

// DefaultMetricsPort is the port of the metrics and health server.
const DefaultMetricsPort = 10351

// DefaultNamespace is the namespace of the leader Lease when POD_NAMESPACE
// is not set.
const DefaultNamespace = controlplane.Namespace

// LeaseName is the name of the controller's leader Lease.
const LeaseName = "palisade-controller"

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
	// MetricsBindAddress is the host:port of the plain-HTTP metrics and
	// health server; empty disables it.
	MetricsBindAddress string
	// EnablePprof serves net/http/pprof on the metrics server.
	EnablePprof bool
	// LeaderElect runs leader election: only the holder of the Lease
	// computes the model and serves the agents.
	LeaderElect bool
	// LeaderElectNamespace is the namespace of the Lease LeaseName.
	LeaderElectNamespace string
	// LeaderElectLeaseDuration, LeaderElectRenewDeadline and
	// LeaderElectRetryPeriod time the election (client-go's
	// leaderelection.LeaderElectionConfig).
	LeaderElectLeaseDuration, LeaderElectRenewDeadline, LeaderElectRetryPeriod time.Duration
}

// NewOptions returns the default options.
func NewOptions() *Options {
	return &Options{
		BindAddress:         "0.0.0.0",
		Port:                DefaultPort,
		AgentServiceAccount: controlplane.Namespace + "/palisade-agent",
		TokenReviewTTL:      10 * time.Second,

		MetricsBindAddress:       net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultMetricsPort)),
		LeaderElect:              true,
		LeaderElectNamespace:     defaultNamespace(),
		LeaderElectLeaseDuration: 15 * time.Second,
		LeaderElectRenewDeadline: 10 * time.Second,
		LeaderElectRetryPeriod:   2 * time.Second,
	}
}

// defaultNamespace is POD_NAMESPACE (the downward API gives the pod's
// namespace) or DefaultNamespace.
func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return DefaultNamespace
}

// AddFlags registers the options' flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path of a kubeconfig file; empty uses the in-cluster configuration.")
	fs.StringVar(&o.BindAddress, "bind-address", o.BindAddress, "IP address the agent-facing API listens on.")
	fs.IntVar(&o.Port, "port", o.Port, "Port the agent-facing API listens on.")
	fs.StringVar(&o.CertDir, "cert-dir", o.CertDir, "Directory of the CA (ca.crt, ca.key), created if missing; empty keeps a new CA in memory. The CA is published in ConfigMap palisade-system/palisade-ca.")
	fs.StringSliceVar(&o.TLSSANs, "tls-san", o.TLSSANs, "Extra host names and IP addresses of the serving certificate (the bind address, when specific, and the host name are always included).")
	fs.StringVar(&o.AgentServiceAccount, "agent-service-account", o.AgentServiceAccount, "namespace/name of the agents' ServiceAccount; only its node-bound tokens may watch.")
	fs.DurationVar(&o.TokenReviewTTL, "token-review-ttl", o.TokenReviewTTL, "How long a TokenReview result is reused for the same token.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, "host:port of the plain-HTTP server of /metrics, /healthz (the process answers) and /readyz (the leader, with its model built and the agent-facing API listening); empty disables it.")
	fs.BoolVar(&o.EnablePprof, "enable-pprof", o.EnablePprof, "Serve Go's pprof profiles under /debug/pprof/ on --metrics-bind-address.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Elect a leader through the Lease "+LeaseName+": only the leader computes the model and serves the agents (a standby does not listen on --port); a leader that loses the Lease exits.")
	fs.StringVar(&o.LeaderElectNamespace, "leader-elect-namespace", o.LeaderElectNamespace, "Namespace of the leader Lease; the default is $POD_NAMESPACE when set, else "+DefaultNamespace+".")
	fs.DurationVar(&o.LeaderElectLeaseDuration, "leader-elect-lease-duration", o.LeaderElectLeaseDuration, "How long a standby waits, after the leader's last renewal, before it takes the Lease.")
	fs.DurationVar(&o.LeaderElectRenewDeadline, "leader-elect-renew-deadline", o.LeaderElectRenewDeadline, "How long the leader keeps trying to renew the Lease before it gives up (and exits); less than the lease duration.")
	fs.DurationVar(&o.LeaderElectRetryPeriod, "leader-elect-retry-period", o.LeaderElectRetryPeriod, "How long candidates wait between attempts to acquire or renew the Lease.")
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
	if err := validateHostPort(o.MetricsBindAddress); err != nil {
		errs = append(errs, fmt.Errorf("--metrics-bind-address: %w", err))
	} else if o.metricsCollide() {
		errs = append(errs, fmt.Errorf("--metrics-bind-address %s and the agent-facing API (--bind-address, --port) %s use the same port",
			o.MetricsBindAddress, o.Address()))
	}
	if o.EnablePprof && o.MetricsBindAddress == "" {
		errs = append(errs, errors.New("--enable-pprof needs --metrics-bind-address"))
	}
	if o.LeaderElect {
		errs = append(errs, o.validateLeaderElection()...)
	}
	return errors.Join(errs...)
}

// metricsCollide says whether the metrics server and the agent-facing API
// would listen on the same port of the same (or every) address.
func (o *Options) metricsCollide() bool {
	host, port, err := net.SplitHostPort(o.MetricsBindAddress)
	if err != nil || port != strconv.Itoa(o.Port) {
		return false
	}
	unspecified := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return unspecified(host) || unspecified(o.BindAddress) || net.ParseIP(host).Equal(net.ParseIP(o.BindAddress))
}

// validateHostPort checks an optional host:port whose host is empty or an
// IP address.
func validateHostPort(address string) error {
	if address == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%q is not host:port", address)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("host %q of %q is not an IP address", host, address)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q of %q is not in 0-65535", port, address)
	}
	return nil
}

// validateLeaderElection checks the election's namespace and timing, as
// client-go's leader elector requires it (renewals have time to retry).
func (o *Options) validateLeaderElection() []error {
	var errs []error
	if o.LeaderElectNamespace == "" {
		errs = append(errs, errors.New("--leader-elect-namespace is empty"))
	}
	for name, d := range map[string]time.Duration{
		"--leader-elect-lease-duration": o.LeaderElectLeaseDuration,
		"--leader-elect-renew-deadline": o.LeaderElectRenewDeadline,
		"--leader-elect-retry-period":   o.LeaderElectRetryPeriod,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s is not positive", name, d))
		}
	}
	if o.LeaderElectLeaseDuration <= o.LeaderElectRenewDeadline {
		errs = append(errs, fmt.Errorf("--leader-elect-lease-duration %s must be longer than --leader-elect-renew-deadline %s",
			o.LeaderElectLeaseDuration, o.LeaderElectRenewDeadline))
	}
	if float64(o.LeaderElectRenewDeadline) <= leaderelection.JitterFactor*float64(o.LeaderElectRetryPeriod) {
		errs = append(errs, fmt.Errorf("--leader-elect-renew-deadline %s must be longer than %.1f × --leader-elect-retry-period %s",
			o.LeaderElectRenewDeadline, leaderelection.JitterFactor, o.LeaderElectRetryPeriod))
	}
	return errs
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
// address, the host name, the controller Service's DNS names, then
// TLSSANs.
func (o *Options) servingHosts() []string {
	var hosts []string
	if ip := net.ParseIP(o.BindAddress); ip != nil && !ip.IsUnspecified() {
		hosts = append(hosts, ip.String())
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	// kube-apiserver reaches the read API through the APIService, which
	// names the Service.
	hosts = append(hosts, serviceHosts()...)
	return append(hosts, o.TLSSANs...)
}

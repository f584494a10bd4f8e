package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	npcontroller "palisade.dev/palisade/agent/controller/networkpolicy"
	"palisade.dev/palisade/agent/debug"
)

// Options configure one node's agent.
type Options struct {
	Kubeconfig    string
	NodeName      string
	ControllerURL string
	OVSDB         string
	OFSocket      string
	OVSUnixctl    string
	Bridge        string
	DatapathType  string
	CNISocket     string
	StateDir      string
	MTU           int
	// TunnelType is the encapsulation between nodes: geneve or vxlan.
	TunnelType string
	// ControllerTokenFile holds the ServiceAccount token, bound to this
	// node, that the agent presents to the controller.
	ControllerTokenFile string
	// ControllerCAFile holds the controller's CA; empty reads it from the
	// ConfigMap the controller publishes.
	ControllerCAFile string
	// APIBindAddress is where /metrics, /healthz, /readyz, the debug API
	// (/debug/flows, /debug/trace) and pprof are served.
	APIBindAddress string
	// EnablePprof serves net/http/pprof under /debug/pprof/.
	EnablePprof bool
	// EnableDebugAPIOnNonLoopback serves the debug API also when
	// APIBindAddress is not a loopback address.
	EnableDebugAPIOnNonLoopback bool
}

// NewOptions returns the defaults of a real deployment.
func NewOptions() *Options {
	return &Options{
		OVSDB:        "unix:/var/run/openvswitch/db.sock",
		OFSocket:     "/var/run/openvswitch/br-int.mgmt",
		OVSUnixctl:   "/var/run/openvswitch/ovs-vswitchd.ctl",
		Bridge:       "br-int",
		DatapathType: "netdev",
		CNISocket:    "/var/run/palisade/cni.sock",
		StateDir:     "/var/lib/palisade",
		MTU:          0,
		TunnelType:   "geneve",
		// The pod's projected ServiceAccount token: bound to the pod and
		// so to its node.
		ControllerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
		APIBindAddress:      "127.0.0.1:10350",
	}
}

// AddFlags registers the options as flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Path to a kubeconfig; empty means in-cluster configuration.")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of the Node this agent runs on (required).")
	fs.StringVar(&o.ControllerURL, "controller-url", o.ControllerURL, "Base URL of the palisade-controller API (required).")
	fs.StringVar(&o.OVSDB, "ovsdb", o.OVSDB, "OVSDB endpoint, e.g. unix:/var/run/openvswitch/db.sock.")
	fs.StringVar(&o.OFSocket, "ofsocket", o.OFSocket, "Path of the bridge's OpenFlow management socket.")
	fs.StringVar(&o.OVSUnixctl, "ovs-unixctl", o.OVSUnixctl, "Path of ovs-vswitchd's unixctl socket (ovs-appctl -t); the agent flushes OVS's datapath flow cache through it after policy changes.")
	fs.StringVar(&o.Bridge, "bridge", o.Bridge, "Name of the OVS integration bridge.")
	fs.StringVar(&o.DatapathType, "datapath-type", o.DatapathType, "OVS datapath type of the bridge (netdev or system).")
	fs.StringVar(&o.CNISocket, "cni-socket", o.CNISocket, "Unix socket the CNI plugin talks to.")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "Directory for the agent's persistent state (IPAM, last policy state).")
	fs.IntVar(&o.MTU, "mtu", o.MTU, "MTU of pod interfaces and the gateway; 0 takes the MTU of the interface holding the node's InternalIP less the tunnel's 50 bytes.")
	fs.StringVar(&o.TunnelType, "tunnel-type", o.TunnelType, "Encapsulation of pod traffic between nodes: geneve or vxlan.")
	fs.StringVar(&o.ControllerTokenFile, "controller-token-file", o.ControllerTokenFile, "File with the agent's ServiceAccount token bound to its node (re-read on every connection), presented to the controller.")
	fs.StringVar(&o.APIBindAddress, "api-bind-address", o.APIBindAddress, "host:port serving, over plain HTTP without authentication, /metrics, /healthz, /readyz, "+
		"the debug API of palisadectl (/debug/flows: the node's policy flows; /debug/trace: runs ofproto/trace; only on a loopback address unless --enable-debug-api-on-non-loopback) "+
		"and /debug/pprof with --enable-pprof.")
	fs.BoolVar(&o.EnablePprof, "enable-pprof", o.EnablePprof, "Serve Go profiling under /debug/pprof/ on --api-bind-address.")
	fs.BoolVar(&o.EnableDebugAPIOnNonLoopback, "enable-debug-api-on-non-loopback", o.EnableDebugAPIOnNonLoopback, "Serve /debug/flows and /debug/trace even when --api-bind-address is not a loopback address "+
		"(anyone reaching it can then read the node's flows and make the agent run traces); otherwise they answer 403 there.")
	fs.StringVar(&o.ControllerCAFile, "controller-ca-file", o.ControllerCAFile, "PEM file of the controller's CA; empty reads ConfigMap palisade-system/palisade-ca.")
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if o.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if o.ControllerURL == "" {
		errs = append(errs, errors.New("--controller-url is required"))
	} else if u, err := url.Parse(o.ControllerURL); err != nil || u.Host == "" {
		errs = append(errs, fmt.Errorf("--controller-url %q is not a URL", o.ControllerURL))
	} else if u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("--controller-url %q: the controller serves https only", o.ControllerURL))
	}
	if o.ControllerTokenFile == "" {
		errs = append(errs, errors.New("--controller-token-file is required: the controller admits only node-bound ServiceAccount tokens"))
	}
	if o.TunnelType != "geneve" && o.TunnelType != "vxlan" {
		errs = append(errs, fmt.Errorf("--tunnel-type %q: want geneve or vxlan", o.TunnelType))
	}
	if _, port, err := net.SplitHostPort(o.APIBindAddress); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("--api-bind-address %q is not host:port", o.APIBindAddress))
	}
	if o.MTU != 0 && (o.MTU < 576 || o.MTU > 9000) {
		errs = append(errs, fmt.Errorf("--mtu %d is out of range [576, 9000] (or 0 for the node's uplink MTU less the tunnel overhead)", o.MTU))
	}
	for name, v := range map[string]string{"--ovsdb": o.OVSDB, "--ofsocket": o.OFSocket, "--bridge": o.Bridge,
		"--cni-socket": o.CNISocket, "--state-dir": o.StateDir} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty", name))
		}
	}
	return errors.Join(errs...)
}

// debugAPIRefusal says why the debug API must not be served on
// APIBindAddress: it is not a loopback address ("" host, a wildcard, a
// host name other than localhost or a non-loopback IP) and
// EnableDebugAPIOnNonLoopback is not set. It is empty when the API may be
// served.
func (o *Options) debugAPIRefusal() string {
	if o.EnableDebugAPIOnNonLoopback {
		return ""
	}
	host, _, err := net.SplitHostPort(o.APIBindAddress)
	if err == nil && host == "localhost" {
		return ""
	}
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
		return ""
	}
	return fmt.Sprintf("--api-bind-address %s is not a loopback address; set --enable-debug-api-on-non-loopback to serve it there", o.APIBindAddress)
}

// debugRoutes returns what registers the debug API served by s, or its
// refusal (with why) where o does not allow it.
func (o *Options) debugRoutes(s *debug.Server) (register func(*http.ServeMux), why string) {
	if why := o.debugAPIRefusal(); why != "" {
		return func(mux *http.ServeMux) { debug.RegisterRefused(mux, why) }, why
	}
	return s.Register, ""
}

// watchConfig is how the agent watches the controller: its node-bound token
// and the controller's CA, both read anew for every connection.
func (o *Options) watchConfig(kube kubernetes.Interface) npcontroller.WatchConfig {
	ca := npcontroller.CAFromConfigMap(kube)
	if o.ControllerCAFile != "" {
		ca = npcontroller.CAFile(o.ControllerCAFile)
	}
	return npcontroller.WatchConfig{URL: o.ControllerURL, Node: o.NodeName, Token: npcontroller.TokenFile(o.ControllerTokenFile), CA: ca}
}

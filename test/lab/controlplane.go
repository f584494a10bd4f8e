package lab

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"

	"palisade.dev/palisade/controller/apis/controlplane"
	"palisade.dev/palisade/test/lab/layout"
)

// Shutdown tiers: proc.StopAll stops the highest first, so node processes
// go before the control plane and kube-apiserver before etcd (the other
// order makes the apiserver hang for about 30 s).
const (
	tierEtcd = iota + 1
	tierAPIServer
	tierControllers
	tierNodes
)

// ports are the control plane's listening ports.
type ports struct {
	EtcdClient, EtcdPeer int
	APIServer            int
	KCM, Scheduler       int
}

func etcdArgs(dataDir string, p ports) []string {
	client := "http://127.0.0.1:" + strconv.Itoa(p.EtcdClient)
	peer := "http://127.0.0.1:" + strconv.Itoa(p.EtcdPeer)
	return []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
}

func apiserverArgs(k *pki, p ports) []string {
	return []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(p.EtcdClient),
		"--bind-address=" + layout.HostIP.String(),
		"--advertise-address=" + layout.HostIP.String(),
		"--secure-port=" + strconv.Itoa(p.APIServer),
		"--cert-dir=" + k.CertDir,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + k.SAPub,
		"--service-account-signing-key-file=" + k.SAKey,
		"--token-auth-file=" + k.TokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + layout.ServiceCIDR,
		"--endpoint-reconciler-type=none",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		// The aggregation layer, for palisade-controller's read API. The
		// lab has no kube-proxy: the aggregator dials endpoints itself.
		"--requestheader-client-ca-file=" + k.FrontProxyCA,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + k.ProxyClientCert,
		"--proxy-client-key-file=" + k.ProxyClientKey,
		"--enable-aggregator-routing=true",
	}
}

func kcmArgs(kubeconfig string, k *pki, p ports) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.KCM),
		"--leader-elect=false",
		"--controllers=*",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + layout.ClusterCIDR,
		"--node-cidr-mask-size=" + strconv.Itoa(layout.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + layout.ServiceCIDR,
		"--service-account-private-key-file=" + k.SAKey,
		"--root-ca-file=" + k.ServingCert,
		"--use-service-account-credentials=false",
	}
}

func schedulerArgs(kubeconfig string, p ports) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.Scheduler),
		"--leader-elect=false",
	}
}

func controllerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig", kubeconfig,
		"--bind-address", layout.HostIP.String(),
		"--port", strconv.Itoa(layout.ControllerPort),
		// Metrics and health checks next to the API, on the lab's host
		// address (the shipped default binds every address).
		"--metrics-bind-address", net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(ControllerMetricsPort)),
		// The Lease goes where the manifest puts it: installReadAPI creates
		// the namespace before the controller starts.
		"--leader-elect-namespace", controlplane.Namespace,
		"--v=2",
	}
}

// ControllerMetricsPort is where the lab's palisade-controller serves
// /metrics, /healthz and /readyz on layout.HostIP.
const ControllerMetricsPort = 10351

// agentArgs is the command line of node i's agent, run through
// `ip netns exec` in the node's namespace: the shipped configuration file
// conf, then the lab's own values.
func agentArgs(agent, conf, kubeconfig string, i int, nd layout.NodeDir, ovsDBSock, ofSock, bridge string) []string {
	return []string{
		"netns", "exec", layout.NodeNetns(i), agent,
		"--config", conf,
		"--kubeconfig", kubeconfig,
		"--node-name", layout.NodeName(i),
		"--controller-url", controllerURL(),
		"--ovsdb", "unix:" + ovsDBSock,
		"--ofsocket", ofSock,
		"--ovs-unixctl", filepath.Join(filepath.Dir(ovsDBSock), "vswitchd.ctl"),
		"--bridge", bridge,
		"--datapath-type", "netdev",
		"--cni-socket", nd.CNISocket(),
		"--state-dir", nd.Agent(),
		"--controller-token-file", filepath.Join(nd.Agent(), agentTokenFile),
		"--v=2",
	}
}

func controllerURL() string {
	return "https://" + net.JoinHostPort(layout.HostIP.String(), strconv.Itoa(layout.ControllerPort))
}

func runtimeArgs(dir string, i int, cniBinDir string) []string {
	return []string{"runtime", "--node", layout.NodeName(i), "--dir", dir, "--cni-bin-dir", cniBinDir, "--v=2"}
}

// listenFree listens on a free TCP port of ip; the caller closes it once
// every port is chosen, so that no two choices collide.
func listenFree(ip netip.Addr) (net.Listener, int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, 0, fmt.Errorf("find a free port on %s: %w", ip, err)
	}
	return l, l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether port can be bound on ip.
func portFree(ip netip.Addr, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// pickPorts chooses the control plane's ports; apiserver is the requested
// port (0: 6443 if free, else any).
func pickPorts(apiserver int) (ports, error) {
	loopback := netip.MustParseAddr("127.0.0.1")
	var p ports
	for _, f := range []*int{&p.EtcdClient, &p.EtcdPeer, &p.KCM, &p.Scheduler} {
		l, port, err := listenFree(loopback)
		if err != nil {
			return p, err
		}
		defer l.Close()
		*f = port
	}
	switch {
	case apiserver != 0:
		if !portFree(layout.HostIP, apiserver) {
			return p, fmt.Errorf("apiserver port %d on %s is in use", apiserver, layout.HostIP)
		}
		p.APIServer = apiserver
	case portFree(layout.HostIP, 6443):
		p.APIServer = 6443
	default:
		l, port, err := listenFree(layout.HostIP)
		if err != nil {
			return p, err
		}
		l.Close()
		p.APIServer = port
	}
	return p, nil
}

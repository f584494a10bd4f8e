// Package layout names everything a palisade-lab owns: node names, network
// namespace and interface names, underlay addresses and the files under the
// lab directory. It is pure: every other lab package derives names and paths
// from here, so `up`, `down`, the node runtime and the probe agree.
package layout

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Underlay and cluster addressing. Everything is inside 198.18.0.0/15.
const (
	// Bridge is the Linux bridge in the host network namespace that joins
	// the nodes' underlay interfaces.
	Bridge = "plab0"
	// NetnsPrefix starts the name of every network namespace the lab makes
	// (nodes and pods); `down` deletes all of them.
	NetnsPrefix = "plab-"
	// HostVethPrefix starts the host end of every node's underlay veth.
	HostVethPrefix = "plab-n"
	// NodeIfName is the underlay interface inside a node's namespace.
	NodeIfName = "eth0"
	// PhysBridge is the OVS bridge in a node that holds NodeIfName as a
	// port and the node's address on its internal interface, so that the
	// userspace datapath's tunnels can use the underlay.
	PhysBridge = "br-phy"
	// UnderlayMTU is the MTU of the underlay; pods get UnderlayMTU minus
	// the tunnel's 50 bytes.
	UnderlayMTU = 1500
	// UnderlayPrefixLen is the prefix length of the underlay subnet.
	UnderlayPrefixLen = 24
	// ServiceCIDR is the cluster's service IP range.
	ServiceCIDR = "198.18.128.0/20"
	// ClusterCIDR is the pod network; every node gets a /24 of it.
	ClusterCIDR = "198.19.0.0/16"
	// NodeCIDRMaskSize is the size of each node's pod CIDR.
	NodeCIDRMaskSize = 24
	// ControllerPort is where palisade-controller listens on HostIP.
	ControllerPort = 10349
	// MaxNodes bounds the node count so node addresses stay in the underlay
	// subnet and interface names stay short.
	MaxNodes = 64
	// firstNodeHost is added to a node's index to form its address.
	firstNodeHost = 10
)

// HostIP is the host's address on the underlay bridge: the apiserver and
// palisade-controller listen there, and nodes reach them through it.
var HostIP = netip.MustParseAddr("198.18.0.1")

// ValidateNodeCount returns an error unless 1 <= n <= MaxNodes.
func ValidateNodeCount(n int) error {
	if n < 1 || n > MaxNodes {
		return fmt.Errorf("node count %d out of range: want 1..%d", n, MaxNodes)
	}
	return nil
}

// NodeName is the Kubernetes name of node i (1-based): "node<i>".
func NodeName(i int) string { return "node" + strconv.Itoa(i) }

// NodeIndex parses a node name made by NodeName.
func NodeIndex(name string) (int, error) {
	s, ok := strings.CutPrefix(name, "node")
	i, err := strconv.Atoi(s)
	if !ok || err != nil || strconv.Itoa(i) != s || ValidateNodeCount(i) != nil {
		return 0, fmt.Errorf("invalid node name %q: want node1..node%d", name, MaxNodes)
	}
	return i, nil
}

// NodeIP is node i's underlay address: 198.18.0.(10+i).
func NodeIP(i int) netip.Addr {
	a := HostIP.As4()
	a[3] = byte(firstNodeHost + i)
	return netip.AddrFrom4(a)
}

// NodeNetns is the network namespace of node i.
func NodeNetns(i int) string { return NetnsPrefix + NodeName(i) }

// HostVeth is the host end of node i's underlay veth (plugged into Bridge).
func HostVeth(i int) string { return HostVethPrefix + strconv.Itoa(i) }

// PodNetns names a pod's network namespace after its UID, so that a pod
// recreated under the same name never collides with its predecessor.
func PodNetns(uid string) string {
	short := strings.ReplaceAll(uid, "-", "")
	if len(short) > 12 {
		short = short[:12]
	}
	return NetnsPrefix + "p" + short
}

// NetnsPath is where `ip netns` mounts a named network namespace.
func NetnsPath(name string) string { return filepath.Join("/var/run/netns", name) }

// Dir is the root of one lab's files.
type Dir string

// Marker is a file `up` creates in the lab directory; `down` deletes a
// directory only if it holds it, so a mistyped --dir is never removed.
func (d Dir) Marker() string { return d.join(".palisade-lab") }

// Config is the lab's recorded configuration (written by `up`).
func (d Dir) Config() string { return d.join("lab.json") }

// Kubeconfig is the admin kubeconfig every component uses.
func (d Dir) Kubeconfig() string { return d.join("kubeconfig") }

// Logs holds the control plane's logs.
func (d Dir) Logs() string { return d.join("logs") }

// Pids holds one pid file per process the lab started.
func (d Dir) Pids() string { return d.join("pids") }

// PKI holds the service account keys, token file and apiserver certs.
func (d Dir) PKI() string { return d.join("pki") }

// Etcd is etcd's data directory.
func (d Dir) Etcd() string { return d.join("etcd") }

// Nodes holds one directory per node.
func (d Dir) Nodes() string { return d.join("nodes") }

// Node returns the files of one node.
func (d Dir) Node(name string) NodeDir { return NodeDir(filepath.Join(d.Nodes(), name)) }

func (d Dir) join(p string) string { return filepath.Join(string(d), p) }

// NodeDir is the directory of one node.
type NodeDir string

// OVS is the node's Open vSwitch instance directory.
func (n NodeDir) OVS() string { return n.join("ovs") }

// Agent is palisade-agent's state directory.
func (n NodeDir) Agent() string { return n.join("agent") }

// CNISocket is where the agent serves palisade-cni.
func (n NodeDir) CNISocket() string { return n.join("cni.sock") }

// Logs holds the node's process logs.
func (n NodeDir) Logs() string { return n.join("logs") }

// Pods is the node runtime's record of its pods and their namespaces.
func (n NodeDir) Pods() string { return n.join("pods.json") }

func (n NodeDir) join(p string) string { return filepath.Join(string(n), p) }

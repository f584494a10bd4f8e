// Package interfacestore keeps the agent's record of the pod interfaces it
// created on its node: the link between a pod, its veth and its OVS port.
package interfacestore

import (
	"net"
	"net/netip"
)

// External IDs written on a pod's OVS port, so a restarted agent can rebuild
// its interfaces from OVSDB.
const (
	ExternalIDOwner        = "palisade-owner" // value: "palisade"
	ExternalIDPodNamespace = "palisade-pod-namespace"
	ExternalIDPodName      = "palisade-pod-name"
	ExternalIDContainerID  = "palisade-container-id"
	ExternalIDIP           = "palisade-ip"
	ExternalIDMAC          = "palisade-mac"
	ExternalIDIfName       = "palisade-if-name" // interface name inside the pod
)

// OwnerPalisade is the value of ExternalIDOwner on rows Palisade created.
const OwnerPalisade = "palisade"

// ExternalIDInterfaceType marks the agent's own ports, which are not pods:
// the node's gateway and its tunnel. Pod ports do not have it.
const (
	ExternalIDInterfaceType = "palisade-interface-type"
	InterfaceTypeGateway    = "gateway"
	InterfaceTypeTunnel     = "tunnel"
)

// PodInterface is one pod's network attachment on this node.
type PodInterface struct {
	PodNamespace string
	PodName      string
	ContainerID  string
	// IfName is the interface name inside the pod (e.g. eth0).
	IfName string
	// HostIfName is the host end of the veth, which is the OVS port name.
	HostIfName string
	OFPort     int32
	MAC        net.HardwareAddr
	IP         netip.Addr
}

// PodKey is "namespace/name".
func (p PodInterface) PodKey() string { return p.PodNamespace + "/" + p.PodName }

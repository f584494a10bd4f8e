package cniserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/ovs/ovsconfig"
)

// Reconcile rebuilds the agent's pod state from OVSDB at startup: every
// pod port Palisade created (not the gateway or tunnel) becomes a Store entry, its IP is marked allocated,
// and its flows are installed again. Ports that cannot be used (veth gone,
// external IDs unreadable, IP not valid in the pod CIDR) are removed, and
// IPs without a port are released. When it succeeds the server starts
// accepting requests; on error it can be called again.
func (s *Server) Reconcile(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	logger := klog.FromContext(ctx)

	ports, err := s.cfg.Bridge.ListPorts(ctx, map[string]string{interfacestore.ExternalIDOwner: interfacestore.OwnerPalisade})
	if err != nil {
		return fmt.Errorf("cniserver: listing OVS ports: %w", err)
	}
	var errs []error
	live := map[string]bool{}
	for _, port := range ports {
		if _, infra := port.ExternalIDs[interfacestore.ExternalIDInterfaceType]; infra {
			continue // the gateway and the tunnel belong to the node, not to a pod
		}
		p, err := podFromPort(port)
		if err == nil {
			err = s.restore(ctx, p)
		}
		if err != nil {
			logger.Info("Removing unusable pod port", "port", port.Name, "reason", err.Error())
			if err := s.removeHostSide(ctx, port.Name); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		live[p.ContainerID] = true
		s.cfg.Store.Add(p)
		if err := s.cfg.Datapath.AddPod(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("installing flows of pod %s: %w", p.PodKey(), err))
		}
	}
	for owner, ip := range s.cfg.IPAM.Owners() {
		if live[owner] {
			continue
		}
		logger.Info("Releasing IP of a pod that has no port", "containerID", owner, "ip", ip)
		if err := s.cfg.IPAM.Release(owner); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range s.cfg.Store.List() {
		if !live[p.ContainerID] {
			s.cfg.Store.Delete(p.ContainerID)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cniserver: reconciling pod interfaces: %w", err)
	}
	logger.Info("Restored pod interfaces", "count", len(live))
	s.ready.Store(true)
	return nil
}

// restore checks that a port's veth still exists and claims its IP.
func (s *Server) restore(ctx context.Context, p interfacestore.PodInterface) error {
	exists, err := s.net.HostLinkExists(p.HostIfName)
	if err != nil {
		return err
	}
	if !exists {
		return errors.New("its veth is gone")
	}
	return s.cfg.IPAM.MarkAllocated(p.ContainerID, p.IP)
}

// podFromPort reads a pod interface back from its port's external IDs.
func podFromPort(port ovsconfig.Port) (interfacestore.PodInterface, error) {
	ids := port.ExternalIDs
	p := interfacestore.PodInterface{
		PodNamespace: ids[interfacestore.ExternalIDPodNamespace],
		PodName:      ids[interfacestore.ExternalIDPodName],
		ContainerID:  ids[interfacestore.ExternalIDContainerID],
		IfName:       ids[interfacestore.ExternalIDIfName],
		HostIfName:   port.Name,
		OFPort:       port.OFPort,
	}
	var missing []string
	for key, v := range map[string]string{
		interfacestore.ExternalIDPodNamespace: p.PodNamespace,
		interfacestore.ExternalIDPodName:      p.PodName,
		interfacestore.ExternalIDContainerID:  p.ContainerID,
		interfacestore.ExternalIDIfName:       p.IfName,
	} {
		if v == "" {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return p, fmt.Errorf("external IDs lack %s", strings.Join(missing, ", "))
	}
	ip, err := netip.ParseAddr(ids[interfacestore.ExternalIDIP])
	if err != nil {
		return p, fmt.Errorf("external ID %s: %w", interfacestore.ExternalIDIP, err)
	}
	p.IP = ip
	mac, err := net.ParseMAC(ids[interfacestore.ExternalIDMAC])
	if err != nil {
		return p, fmt.Errorf("external ID %s: %w", interfacestore.ExternalIDMAC, err)
	}
	p.MAC = mac
	return p, nil
}

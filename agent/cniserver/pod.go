package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/podnet"
	"palisade.dev/palisade/cni/protocol"
	"palisade.dev/palisade/ovs/ovsconfig"
)

// cleanupTimeout bounds a rollback, which runs even if the request was
// cancelled.
const cleanupTimeout = 30 * time.Second

// add attaches the pod and returns the encoded CNI result. Adding a
// container that is attached and healthy returns its result again.
func (s *Server) add(ctx context.Context, req *protocol.Request) ([]byte, *types.Error) {
	logger := klog.FromContext(ctx)
	if p, ok := s.cfg.Store.GetByContainerID(req.ContainerID); ok {
		if p.IfName != req.IfName {
			return nil, cniError(types.ErrInvalidEnvironmentVariables, fmt.Errorf(
				"container already has interface %s and Palisade attaches one interface per pod, cannot add %s", p.IfName, req.IfName))
		}
		att, err := s.verify(ctx, p, req.Netns)
		if err == nil {
			logger.V(2).Info("Pod is already attached")
			return encodeResult(s.result(p, att, req.Netns))
		}
		logger.Info("Existing attachment is broken, recreating it", "reason", err.Error())
		if err := s.detach(ctx, req.ContainerID, req.IfName); err != nil {
			return nil, cniError(types.ErrInternal, fmt.Errorf("removing the broken attachment: %w", err))
		}
	}
	p, att, err := s.attach(ctx, req)
	if err != nil {
		code := types.ErrInternal
		if errors.As(err, new(*podnet.NetNSError)) {
			code = types.ErrInvalidNetNS
		}
		return nil, cniError(code, err)
	}
	logger.Info("Pod attached", "ip", p.IP, "hostIf", p.HostIfName, "ofport", p.OFPort)
	return encodeResult(s.result(p, att, req.Netns))
}

// attach does the work of ADD; on failure it undoes every step it did.
func (s *Server) attach(ctx context.Context, req *protocol.Request) (p interfacestore.PodInterface, att podnet.Attachment, err error) {
	hostIf := podnet.HostIfName(req.ContainerID, req.IfName)
	if other, ok := s.cfg.Store.GetByHostIfName(hostIf); ok {
		return p, att, fmt.Errorf("host interface name %s is already used by container %s", hostIf, other.ContainerID)
	}
	// Leftovers of an attachment interrupted by a crash must not block this one.
	if err := s.removeHostSide(ctx, hostIf); err != nil {
		return p, att, err
	}

	var undo rollback
	defer func() {
		if err != nil {
			undo.run(ctx)
		}
	}()

	ip, err := s.cfg.IPAM.Allocate(req.ContainerID)
	if err != nil {
		return p, att, fmt.Errorf("allocating an IP: %w", err)
	}
	undo.push("release IP", func(context.Context) error { return s.cfg.IPAM.Release(req.ContainerID) })

	att, err = s.net.Setup(s.podnetConfig(req.Netns, req.IfName, hostIf, ip))
	if err != nil {
		return p, att, err
	}
	undo.push("delete veth "+hostIf, func(context.Context) error { return s.net.Teardown(hostIf) })

	p = interfacestore.PodInterface{
		PodNamespace: req.PodNamespace,
		PodName:      req.PodName,
		ContainerID:  req.ContainerID,
		IfName:       req.IfName,
		HostIfName:   hostIf,
		MAC:          att.PodMAC,
		IP:           ip,
	}
	port, err := s.cfg.Bridge.CreatePort(ctx, hostIf, "", externalIDs(p))
	if err != nil {
		return p, att, fmt.Errorf("adding %s to the OVS bridge: %w", hostIf, err)
	}
	undo.push("delete OVS port "+hostIf, func(ctx context.Context) error { return s.cfg.Bridge.DeletePort(ctx, hostIf) })
	p.OFPort = port.OFPort

	if err := s.cfg.Datapath.AddPod(ctx, p); err != nil {
		// Flows installed before the failure must go too.
		undo.push("delete pod flows", func(ctx context.Context) error { return s.cfg.Datapath.DeletePod(ctx, p) })
		return p, att, fmt.Errorf("installing the pod's flows: %w", err)
	}
	s.cfg.Store.Add(p)
	return p, att, nil
}

// del detaches the pod. Detaching what is not there succeeds, and so does a
// DEL whose network namespace is gone (the kernel removed the veth with it).
func (s *Server) del(ctx context.Context, req *protocol.Request) *types.Error {
	if p, ok := s.cfg.Store.GetByContainerID(req.ContainerID); ok && p.IfName != req.IfName {
		klog.FromContext(ctx).Info("DEL for an interface the container does not have; nothing to do", "ifName", req.IfName, "attached", p.IfName)
		return nil
	}
	if err := s.detach(ctx, req.ContainerID, req.IfName); err != nil {
		return cniError(types.ErrInternal, err)
	}
	return nil
}

// detach removes, in order, the pod's flows, OVS port, veth and IP, and
// then forgets it. It stops at the first failure so a retry finds the rest.
func (s *Server) detach(ctx context.Context, containerID, ifName string) error {
	logger := klog.FromContext(ctx)
	p, known := s.cfg.Store.GetByContainerID(containerID)
	if known {
		if err := s.cfg.Datapath.DeletePod(ctx, p); err != nil {
			return fmt.Errorf("removing the pod's flows: %w", err)
		}
	}
	if err := s.removeHostSide(ctx, podnet.HostIfName(containerID, ifName)); err != nil {
		return err
	}
	if err := s.cfg.IPAM.Release(containerID); err != nil {
		return fmt.Errorf("releasing the pod's IP: %w", err)
	}
	s.cfg.Store.Delete(containerID)
	if known {
		logger.Info("Pod detached", "ip", p.IP, "hostIf", p.HostIfName)
	}
	return nil
}

// removeHostSide deletes an OVS port and the veth of that name, if present.
func (s *Server) removeHostSide(ctx context.Context, hostIf string) error {
	if err := s.cfg.Bridge.DeletePort(ctx, hostIf); err != nil {
		return fmt.Errorf("deleting OVS port %s: %w", hostIf, err)
	}
	if err := s.net.Teardown(hostIf); err != nil {
		return err
	}
	return nil
}

// check verifies the attachment, and the IP of prevResult if there is one.
func (s *Server) check(ctx context.Context, req *protocol.Request) *types.Error {
	p, ok := s.cfg.Store.GetByContainerID(req.ContainerID)
	if !ok {
		return cniError(types.ErrUnknownContainer, errors.New("container is not attached"))
	}
	if p.IfName != req.IfName {
		return cniError(types.ErrInvalidEnvironmentVariables, fmt.Errorf("container has interface %s, not %s", p.IfName, req.IfName))
	}
	if err := checkPrevResult(req.NetConf, p.IP); err != nil {
		return cniError(types.ErrInternal, err)
	}
	if _, err := s.verify(ctx, p, req.Netns); err != nil {
		code := types.ErrInternal
		if errors.As(err, new(*podnet.NetNSError)) {
			code = types.ErrInvalidNetNS
		}
		return cniError(code, err)
	}
	return nil
}

// verify checks the kernel side and the OVS port of an attachment.
func (s *Server) verify(ctx context.Context, p interfacestore.PodInterface, netns string) (podnet.Attachment, error) {
	att, err := s.net.Check(s.podnetConfig(netns, p.IfName, p.HostIfName, p.IP))
	if err != nil {
		return att, err
	}
	if p.MAC != nil && att.PodMAC.String() != p.MAC.String() {
		return att, fmt.Errorf("pod interface MAC is %s, recorded %s", att.PodMAC, p.MAC)
	}
	ports, err := s.cfg.Bridge.ListPorts(ctx, map[string]string{interfacestore.ExternalIDContainerID: p.ContainerID})
	if err != nil {
		return att, fmt.Errorf("listing OVS ports: %w", err)
	}
	if !slices.ContainsFunc(ports, func(port ovsconfig.Port) bool { return port.Name == p.HostIfName }) {
		return att, fmt.Errorf("OVS port %s is missing", p.HostIfName)
	}
	return att, nil
}

// checkPrevResult fails if the configuration carries a prevResult that
// does not list ip.
func checkPrevResult(netConf []byte, ip netip.Addr) error {
	conf := &types.NetConf{}
	if err := json.Unmarshal(netConf, conf); err != nil {
		return fmt.Errorf("parsing the network configuration: %w", err)
	}
	if conf.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(conf); err != nil {
		return fmt.Errorf("parsing prevResult: %w", err)
	}
	prev, err := types100.GetResult(conf.PrevResult)
	if err != nil {
		return fmt.Errorf("converting prevResult: %w", err)
	}
	for _, c := range prev.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP); ok && a.Unmap() == ip {
			return nil
		}
	}
	return fmt.Errorf("prevResult does not list the pod's IP %s", ip)
}

func (s *Server) podnetConfig(netns, ifName, hostIf string, ip netip.Addr) podnet.Config {
	return podnet.Config{
		Netns:      netns,
		IfName:     ifName,
		HostIfName: hostIf,
		Addr:       netip.PrefixFrom(ip, s.cfg.PodCIDR.Bits()),
		Gateway:    s.cfg.GatewayIP,
		MTU:        s.cfg.MTU,
	}
}

// result is the CNI result of an attachment: interface 0 is the host end,
// interface 1 the pod end, which holds the IP.
func (s *Server) result(p interfacestore.PodInterface, att podnet.Attachment, netns string) *types100.Result {
	gw := net.IP(s.cfg.GatewayIP.AsSlice())
	return &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: p.HostIfName, Mac: att.HostMAC.String()},
			{Name: p.IfName, Mac: att.PodMAC.String(), Sandbox: netns},
		},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(1),
			Address:   net.IPNet{IP: p.IP.AsSlice(), Mask: net.CIDRMask(s.cfg.PodCIDR.Bits(), 32)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
	}
}

func encodeResult(r *types100.Result) ([]byte, *types.Error) {
	data, err := json.Marshal(r)
	if err != nil {
		return nil, cniError(types.ErrInternal, fmt.Errorf("encoding the result: %w", err))
	}
	return data, nil
}

// externalIDs marks a pod's OVS port so Reconcile can rebuild it.
func externalIDs(p interfacestore.PodInterface) map[string]string {
	return map[string]string{
		interfacestore.ExternalIDOwner:        interfacestore.OwnerPalisade,
		interfacestore.ExternalIDPodNamespace: p.PodNamespace,
		interfacestore.ExternalIDPodName:      p.PodName,
		interfacestore.ExternalIDContainerID:  p.ContainerID,
		interfacestore.ExternalIDIfName:       p.IfName,
		interfacestore.ExternalIDIP:           p.IP.String(),
		interfacestore.ExternalIDMAC:          p.MAC.String(),
	}
}

func cniError(code uint, err error) *types.Error {
	return types.NewError(code, "palisade agent: "+err.Error(), "")
}

// rollback is a stack of undo steps.
type rollback struct {
	steps []undoStep
}

type undoStep struct {
	what string
	do   func(context.Context) error
}

func (r *rollback) push(what string, do func(context.Context) error) {
	r.steps = append(r.steps, undoStep{what: what, do: do})
}

// run undoes the steps in reverse order, even if ctx was cancelled, and
// logs the ones that fail.
func (r *rollback) run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for i := len(r.steps) - 1; i >= 0; i-- {
		if err := r.steps[i].do(ctx); err != nil {
			logger.Error(err, "Rollback step failed; it may leak", "step", r.steps[i].what)
		}
	}
}

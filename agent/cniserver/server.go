// Package cniserver is the agent side of the CNI: it serves the palisade-cni
// plugin's requests on a root-only unix socket and attaches pods to the
// node's OVS bridge (IP from IPAM, veth pair, OVS port, datapath flows),
// rolling back every step of a failed attachment.
package cniserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/interfacestore"
	"palisade.dev/palisade/agent/ipam"
	"palisade.dev/palisade/agent/podnet"
	"palisade.dev/palisade/cni/protocol"
	"palisade.dev/palisade/ovs/ovsconfig"
)

// DefaultMTU is the pod interface MTU when Config.MTU is 0.
const DefaultMTU = 1500

// maxRequestBytes bounds a request body; real ones are a few hundred bytes.
const maxRequestBytes = 1 << 20

// PodDatapath installs and removes a pod's forwarding flows. The agent's
// OpenFlow pipeline implements it.
type PodDatapath interface {
	AddPod(ctx context.Context, p interfacestore.PodInterface) error
	DeletePod(ctx context.Context, p interfacestore.PodInterface) error
}

// Config is what a Server needs.
type Config struct {
	// SocketPath is the unix socket to serve on (protocol.DefaultSocketPath).
	SocketPath string
	PodCIDR    netip.Prefix
	// GatewayIP is the pods' default gateway: the first host address of
	// PodCIDR, which IPAM must reserve.
	GatewayIP netip.Addr
	// MTU of the pod interfaces; DefaultMTU if 0.
	MTU      int
	Bridge   ovsconfig.BridgeConfig
	Datapath PodDatapath
	Store    *interfacestore.Store
	// IPAM allocates from PodCIDR; pod addresses are owned by container ID.
	IPAM *ipam.Allocator
}

// podNetwork is the kernel side of an attachment (package podnet); tests of
// the server's logic replace it.
type podNetwork interface {
	Setup(cfg podnet.Config) (podnet.Attachment, error)
	Check(cfg podnet.Config) (podnet.Attachment, error)
	Teardown(hostIfName string) error
	HostLinkExists(hostIfName string) (bool, error)
}

type kernelPodNetwork struct{}

func (kernelPodNetwork) Setup(cfg podnet.Config) (podnet.Attachment, error) { return podnet.Setup(cfg) }
func (kernelPodNetwork) Check(cfg podnet.Config) (podnet.Attachment, error) { return podnet.Check(cfg) }
func (kernelPodNetwork) Teardown(name string) error                         { return podnet.Teardown(name) }
func (kernelPodNetwork) HostLinkExists(name string) (bool, error)           { return podnet.HostLinkExists(name) }

// Server attaches and detaches pods on request of the CNI plugin. Requests
// are refused (try again later) until Reconcile has succeeded once.
type Server struct {
	cfg Config
	net podNetwork

	ready atomic.Bool
	// mu is held for writing by Reconcile and for reading by each request.
	mu sync.RWMutex
	// containers serializes requests for the same container.
	containers keyedMutex

	// gcMu guards missingSince: when GarbageCollect first saw a
	// container's pod missing from the cluster.
	gcMu         sync.Mutex
	missingSince map[string]time.Time
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	switch {
	case cfg.SocketPath == "":
		return nil, errors.New("cniserver: socket path is empty")
	case cfg.Bridge == nil || cfg.Datapath == nil || cfg.Store == nil || cfg.IPAM == nil:
		return nil, errors.New("cniserver: Bridge, Datapath, Store and IPAM must all be set")
	case !cfg.PodCIDR.IsValid() || cfg.IPAM.CIDR() != cfg.PodCIDR:
		return nil, fmt.Errorf("cniserver: pod CIDR %s is invalid or not the IPAM's CIDR %s", cfg.PodCIDR, cfg.IPAM.CIDR())
	case !cfg.PodCIDR.Contains(cfg.GatewayIP) || !cfg.IPAM.Reserved(cfg.GatewayIP):
		return nil, fmt.Errorf("cniserver: gateway %s must be in pod CIDR %s and reserved in IPAM", cfg.GatewayIP, cfg.PodCIDR)
	case cfg.MTU < 68 || cfg.MTU > 65535:
		return nil, fmt.Errorf("cniserver: MTU %d is out of range [68, 65535]", cfg.MTU)
	}
	return &Server{cfg: cfg, net: kernelPodNetwork{}}, nil
}

// Ready reports whether the server accepts CNI requests (Reconcile has
// succeeded).
func (s *Server) Ready() bool { return s.ready.Load() }

// Run serves on the socket until ctx is done. A stale socket file is
// removed first; the socket is made accessible to root only.
func (s *Server) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	path := s.cfg.SocketPath
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("cniserver: creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("cniserver: %s exists and is not a socket; not removing it", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("cniserver: removing stale socket: %w", err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("cniserver: listening on %s: %w", path, err)
	}
	defer os.Remove(path)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("cniserver: restricting socket permissions: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Error(err, "CNI server did not shut down cleanly")
		}
	}()
	logger.Info("Serving CNI requests", "socket", path)
	err = srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return fmt.Errorf("cniserver: serving: %w", err)
}

// Handler returns the HTTP handler of the plugin protocol (see package
// protocol).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.PathCNI, s.serveCNI)
	mux.HandleFunc("GET "+protocol.PathStatus, s.serveStatus)
	return mux
}

func (s *Server) serveStatus(w http.ResponseWriter, _ *http.Request) {
	if !s.Ready() {
		writeResponse(w, http.StatusServiceUnavailable, protocol.Response{Error: types.NewError(types.ErrPluginNotAvailable,
			"palisade agent: not ready yet (restoring the pod interfaces of this node)", "")})
		return
	}
	writeResponse(w, http.StatusOK, protocol.Response{})
}

func (s *Server) serveCNI(w http.ResponseWriter, r *http.Request) {
	var req protocol.Request
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes))
	if err == nil {
		err = json.Unmarshal(data, &req)
	}
	if err != nil {
		writeResponse(w, http.StatusBadRequest, protocol.Response{Error: types.NewError(types.ErrDecodingFailure,
			"palisade agent: cannot decode the request", err.Error())})
		return
	}
	if cniErr := req.Validate(); cniErr != nil {
		cniErr.Msg = "palisade agent: " + cniErr.Msg
		writeResponse(w, http.StatusBadRequest, protocol.Response{Error: cniErr})
		return
	}
	if !s.Ready() {
		writeResponse(w, http.StatusServiceUnavailable, protocol.Response{Error: types.NewError(types.ErrTryAgainLater,
			"palisade agent: not ready yet (restoring the pod interfaces of this node); try again", "")})
		return
	}
	logger := klog.FromContext(r.Context()).WithValues("command", req.Command, "containerID", req.ContainerID,
		"pod", klog.KRef(req.PodNamespace, req.PodName))
	ctx := klog.NewContext(r.Context(), logger)
	start := time.Now()
	resp, status := s.handle(ctx, &req)
	if resp.Error != nil {
		logger.Error(resp.Error, "CNI request failed", "duration", time.Since(start))
	} else {
		logger.V(2).Info("CNI request done", "duration", time.Since(start))
	}
	writeResponse(w, status, resp)
}

// handle runs one validated request under the locks.
func (s *Server) handle(ctx context.Context, req *protocol.Request) (protocol.Response, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	unlock := s.containers.lock(req.ContainerID)
	defer unlock()

	var cniErr *types.Error
	var resp protocol.Response
	switch req.Command {
	case protocol.CommandAdd:
		var result []byte
		result, cniErr = s.add(ctx, req)
		resp.Result = result
	case protocol.CommandDel:
		cniErr = s.del(ctx, req)
	case protocol.CommandCheck:
		cniErr = s.check(ctx, req)
	}
	if cniErr != nil {
		return protocol.Response{Error: cniErr}, http.StatusInternalServerError
	}
	return resp, http.StatusOK
}

func writeResponse(w http.ResponseWriter, status int, resp protocol.Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

// keyedMutex is a set of mutexes by key that exist only while used.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*refMutex
}

type refMutex struct {
	sync.Mutex
	refs int
}

// lock locks key and returns the function that unlocks it.
func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*refMutex{}
	}
	m := k.locks[key]
	if m == nil {
		m = &refMutex{}
		k.locks[key] = m
	}
	m.refs++
	k.mu.Unlock()
	m.Lock()
	return func() {
		m.Unlock()
		k.mu.Lock()
		m.refs--
		if m.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

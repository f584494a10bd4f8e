package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Readiness holds the conditions of /readyz. A replica is ready when it is
// the leader, its model is built from synced informers, and the
// agent-facing API listens: only then may a Service send agents to it.
type Readiness struct {
	leader, synced, listening atomic.Bool
}

// SetLeader records that this replica leads (or runs without election).
func (r *Readiness) SetLeader() { r.leader.Store(true) }

// SetSynced records that the initial model is built.
func (r *Readiness) SetSynced() { r.synced.Store(true) }

// SetListening records that the agent-facing API listens.
func (r *Readiness) SetListening() { r.listening.Store(true) }

// Check returns nil when ready, or an error naming what is missing.
func (r *Readiness) Check() error {
	switch {
	case !r.leader.Load():
		return errors.New("not the leader (standby)")
	case !r.synced.Load():
		return errors.New("informers not synced: the model is not built yet")
	case !r.listening.Load():
		return errors.New("the agent-facing API is not listening yet")
	}
	return nil
}

// ServerConfig configures the metrics and health server.
type ServerConfig struct {
	// Registry is served at /metrics.
	Registry *prometheus.Registry
	// Ready returns nil when the controller is ready (/readyz).
	Ready func() error
	// EnablePprof serves net/http/pprof under /debug/pprof/.
	EnablePprof bool
}

// Handler returns the server's routes: /metrics, /healthz (the process
// answers), /readyz and, if enabled, /debug/pprof/.
func Handler(cfg ServerConfig) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := cfg.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Listen binds the metrics address, so a taken port fails the start.
func Listen(ctx context.Context, address string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listening on the metrics address %s: %w", address, err)
	}
	return l, nil
}

// Serve serves cfg's routes on l until ctx is done.
func Serve(ctx context.Context, l net.Listener, cfg ServerConfig) error {
	srv := &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	klog.FromContext(ctx).Info("Serving metrics and health checks", "address", l.Addr().String(), "pprof", cfg.EnablePprof)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics on %s: %w", l.Addr(), err)
	}
	return nil
}

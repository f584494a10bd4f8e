package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// ServerConfig configures the agent's API server.
type ServerConfig struct {
	// Address is host:port to listen on.
	Address string
	// Registry is served at /metrics.
	Registry *prometheus.Registry
	// Ready returns nil when the agent is ready (/readyz).
	Ready func() error
	// EnablePprof serves net/http/pprof under /debug/pprof/.
	EnablePprof bool
	// Register, if set, adds more routes (the debug API, agent/debug).
	Register func(mux *http.ServeMux)
}

// Handler returns the API's routes: /metrics, /healthz, /readyz and, if
// enabled, /debug/pprof/.
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
	if cfg.Register != nil {
		cfg.Register(mux)
	}
	return mux
}

// Listen binds the API address, so a taken port fails the agent's start.
func Listen(ctx context.Context, address string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listening on the API address %s: %w", address, err)
	}
	return l, nil
}

// Serve serves the API on l until ctx is done.
func Serve(ctx context.Context, l net.Listener, cfg ServerConfig) error {
	srv := &http.Server{Handler: Handler(cfg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	klog.FromContext(ctx).Info("Serving the agent API", "address", l.Addr().String(), "pprof", cfg.EnablePprof)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

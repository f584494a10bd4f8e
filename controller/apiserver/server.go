package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Authorizer decides whether a request may watch a node's span.
//
// This is the seam for authentication: a later change verifies the agent's
// ServiceAccount token (TokenReview) over TLS and checks that it belongs to
// the node it asks for. Until then the server uses AllowAll.
type Authorizer interface {
	Authorize(r *http.Request, node string) error
}

// AllowAll is an Authorizer that allows every request. It is a placeholder
// until authentication is implemented; do not rely on it for security.
type AllowAll struct{}

// Authorize allows the request.
func (AllowAll) Authorize(*http.Request, string) error { return nil }

// HealthzPath answers 200 "ok" while the server runs.
const HealthzPath = "/healthz"

// NewHandler returns the HTTP handler of the agent-facing API:
// controlplane.WatchPath and HealthzPath.
func NewHandler(ctx context.Context, store *Store, auth Authorizer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle(controlplane.WatchPath, &watchHandler{logger: klog.FromContext(ctx), store: store, auth: auth})
	return mux
}

type watchHandler struct {
	logger klog.Logger
	store  *Store
	auth   Authorizer
}

func (h *watchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "only GET is supported", http.StatusMethodNotAllowed)
		return
	}
	node := r.URL.Query().Get("node")
	if node == "" {
		http.Error(w, `missing required query parameter "node" (the name of the agent's node)`, http.StatusBadRequest)
		return
	}
	if err := h.auth.Authorize(r, node); err != nil {
		http.Error(w, fmt.Sprintf("not allowed to watch node %q: %v", node, err), http.StatusForbidden)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported by this connection", http.StatusInternalServerError)
		return
	}
	logger := klog.LoggerWithValues(h.logger, "node", node, "remote", r.RemoteAddr)
	watcher := h.store.Watch(node)
	defer watcher.Stop()
	logger.V(2).Info("Watch started")

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	enc := json.NewEncoder(w)
	for {
		events, err := watcher.Next(r.Context())
		if err != nil {
			if errors.Is(err, ErrOverflow) {
				logger.Info("Dropped a watcher that fell behind; the agent will re-list")
			} else {
				logger.V(2).Info("Watch ended", "reason", err)
			}
			return
		}
		for i := range events {
			if err := enc.Encode(&events[i]); err != nil {
				logger.V(2).Info("Watch ended: write failed", "err", err)
				return
			}
			flusher.Flush()
		}
	}
}

// Serve serves handler on ln until ctx is done. Open watches end when ctx is
// done, since their requests' contexts derive from it.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	select {
	case err := <-errCh:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down the server on %s: %w", ln.Addr(), err)
	}
	return nil
}

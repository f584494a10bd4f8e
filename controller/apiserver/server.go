package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Authorizer authenticates a request and decides whether it may watch a
// node's span. It returns nil, an *AuthError (refused), or another error
// (the decision could not be made).
type Authorizer interface {
	Authorize(ctx context.Context, r *http.Request, node string) error
}

// AuthorizerFunc is a function that is an Authorizer.
type AuthorizerFunc func(ctx context.Context, r *http.Request, node string) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, r *http.Request, node string) error {
	return f(ctx, r, node)
}

// AuthError is a refused request: Status is http.StatusUnauthorized (no or
// an invalid credential) or http.StatusForbidden (a valid credential that
// may not watch the node).
type AuthError struct {
	Status int
	Reason string
	// FrontProxy marks a 401 of the read API because the request did
	// not come from kube-apiserver's front proxy (see
	// controlplane.StatusReasonFrontProxyRejected).
	FrontProxy bool
}

func (e *AuthError) Error() string { return e.Reason }

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
	if err := h.auth.Authorize(r.Context(), r, node); err != nil {
		var authErr *AuthError
		if !errors.As(err, &authErr) {
			h.logger.Error(err, "Cannot authorize a watch", "node", node, "remote", r.RemoteAddr)
			http.Error(w, fmt.Sprintf("cannot authorize the watch of node %q: %v", node, err), http.StatusServiceUnavailable)
			return
		}
		if authErr.Status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="palisade-controller"`)
		}
		h.logger.V(2).Info("Refused a watch", "node", node, "remote", r.RemoteAddr, "status", authErr.Status, "reason", authErr.Reason)
		http.Error(w, fmt.Sprintf("watch of node %q refused: %s", node, authErr.Reason), authErr.Status)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported by this connection", http.StatusInternalServerError)
		return
	}
	logger := klog.LoggerWithValues(h.logger, "node", node, "remote", r.RemoteAddr)
	token := r.URL.Query().Get(controlplane.ResumeParam)
	watcher, resumed := h.store.Resume(node, token)
	defer watcher.Stop()
	mode := controlplane.WatchModeList
	if resumed {
		mode = controlplane.WatchModeResume
	}
	// A token that cannot resume (malformed, from a restarted controller,
	// older than the node's history) gets the whole state.
	logger.V(2).Info("Watch started", "mode", mode, "resumeFrom", token)

	w.Header().Set(controlplane.WatchModeHeader, mode)
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

// Serve serves handler on ln, over TLS with tlsConfig, until ctx is done.
// Open watches end when ctx is done, since their requests' contexts derive
// from it.
func Serve(ctx context.Context, ln net.Listener, tlsConfig *tls.Config, handler http.Handler) error {
	if tlsConfig == nil {
		return errors.New("serving the agent-facing API: no TLS configuration")
	}
	ln = tls.NewListener(ln, tlsConfig)
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

// Package networkpolicy is the agent's view of the controller's policies: a
// client of the controller's watch API and a Cache of the node's span
// (policies, AppliedToGroups and AddressGroups), persisted so that a
// restarted agent can enforce before the controller is reachable.
package networkpolicy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Handler receives the watch streams of Watch.
type Handler interface {
	// ResumeToken is the token of the last event applied (see
	// controlplane.FormatResumeToken), or "" to ask for the whole state.
	// Watch calls it before every connection.
	ResumeToken() string
	// StartStream is called when a new stream begins. If resumed, the
	// controller resumes from ResumeToken: the stream holds the events
	// since then, then a BOOKMARK, then changes. Otherwise the stream's
	// ADDED events up to its BOOKMARK are the complete state of the node.
	StartStream(resumed bool)
	// Handle applies one event. An error ends the stream; Watch then starts
	// a fresh one, from ResumeToken.
	Handle(controlplane.Event) error
}

// WatchConfig says where and as whom an agent watches the controller.
type WatchConfig struct {
	// URL is the controller's base URL, e.g. "https://198.18.0.1:10349".
	URL string
	// Node is the agent's node.
	Node string
	// Token returns the bearer token to present; it is called for every
	// connection, so a rotated token is picked up. Nil sends no token.
	Token func() (string, error)
	// CA returns the PEM certificates that verify the controller; it is
	// called for every connection, so a new controller CA is picked up.
	// Nil uses the system's roots.
	CA func(ctx context.Context) ([]byte, error)
}

// TokenFile returns a WatchConfig.Token that reads the token in path (for
// example a projected ServiceAccount token, which the kubelet rotates).
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading the controller token: %w", err)
		}
		token := strings.TrimSpace(string(data))
		if token == "" {
			return "", fmt.Errorf("the controller token file %s is empty", path)
		}
		return token, nil
	}
}

// CAFile returns a WatchConfig.CA that reads the PEM file path.
func CAFile(path string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading the controller CA: %w", err)
		}
		return data, nil
	}
}

// CAFromConfigMap returns a WatchConfig.CA that reads the CA the controller
// publishes (controlplane.CAConfigMapNamespace/CAConfigMapName).
func CAFromConfigMap(client kubernetes.Interface) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		cm, err := client.CoreV1().ConfigMaps(controlplane.CAConfigMapNamespace).Get(ctx, controlplane.CAConfigMapName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading the controller CA from ConfigMap %s/%s: %w",
				controlplane.CAConfigMapNamespace, controlplane.CAConfigMapName, err)
		}
		ca := cm.Data[controlplane.CAConfigMapKey]
		if ca == "" {
			return nil, fmt.Errorf("ConfigMap %s/%s has no %q", controlplane.CAConfigMapNamespace, controlplane.CAConfigMapName, controlplane.CAConfigMapKey)
		}
		return []byte(ca), nil
	}
}

// Watch streams the node's span from the controller into h until ctx is
// done. When a stream breaks, it reconnects with exponential backoff and
// resumes from h's token, or re-lists if the controller cannot resume. It
// returns an error only for invalid arguments; it returns nil once ctx is
// done.
func Watch(ctx context.Context, cfg WatchConfig, h Handler) error {
	w, err := newWatcher(cfg, h)
	if err != nil {
		return err
	}
	w.run(ctx)
	return nil
}

// watcher holds one agent's watch loop.
type watcher struct {
	url     string
	cfg     WatchConfig
	handler Handler
	backoff wait.Backoff // initial backoff; reset after a stream reaches its BOOKMARK

	// client is the HTTP client for caPEM, remade when the CA changes.
	client *http.Client
	caPEM  []byte
}

func newWatcher(cfg WatchConfig, h Handler) (*watcher, error) {
	if cfg.Node == "" {
		return nil, errors.New("watch: node name is empty")
	}
	if h == nil {
		return nil, errors.New("watch: handler is nil")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("watch: invalid controller URL %q: %w", cfg.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("watch: controller URL %q must be http(s)://host:port", cfg.URL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + controlplane.WatchPath
	u.RawQuery = ""
	return &watcher{
		url:     u.String(),
		cfg:     cfg,
		handler: h,
		backoff: wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: 30 * time.Second},
	}, nil
}

// httpClient returns the client for the current CA.
func (w *watcher) httpClient(ctx context.Context) (*http.Client, error) {
	var caPEM []byte
	if w.cfg.CA != nil {
		var err error
		if caPEM, err = w.cfg.CA(ctx); err != nil {
			return nil, err
		}
	}
	if w.client != nil && bytes.Equal(caPEM, w.caPEM) {
		return w.client, nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	transport.ResponseHeaderTimeout = 30 * time.Second
	if caPEM != nil {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the controller CA holds no PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
	// No overall timeout: a watch lasts as long as the connection.
	w.client, w.caPEM = &http.Client{Transport: transport}, caPEM
	return w.client, nil
}

func (w *watcher) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("url", w.url)
	backoff := w.backoff
	for {
		synced, err := w.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if synced {
			backoff = w.backoff
		}
		delay := backoff.Step()
		logger.Error(err, "Watch of the controller ended; reconnecting", "after", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// watchOnce runs one stream until it breaks. synced says whether it reached
// its BOOKMARK. It always returns a non-nil error.
func (w *watcher) watchOnce(ctx context.Context) (synced bool, err error) {
	query := url.Values{"node": {w.cfg.Node}}
	token := w.handler.ResumeToken()
	if token != "" {
		query.Set(controlplane.ResumeParam, token)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"?"+query.Encode(), nil)
	if err != nil {
		return false, fmt.Errorf("building the watch request: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	if w.cfg.Token != nil {
		token, err := w.cfg.Token()
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client, err := w.httpClient(ctx)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("connecting to the controller: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return false, fmt.Errorf("the controller refused the watch: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	resumed := token != "" && resp.Header.Get(controlplane.WatchModeHeader) == controlplane.WatchModeResume
	klog.FromContext(ctx).V(2).Info("Watching the controller", "node", w.cfg.Node, "resumed", resumed)
	w.handler.StartStream(resumed)
	dec := json.NewDecoder(resp.Body)
	for {
		var ev controlplane.Event
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) {
				return synced, errors.New("the controller closed the stream")
			}
			return synced, fmt.Errorf("reading the watch stream: %w", err)
		}
		if err := w.handler.Handle(ev); err != nil {
			return synced, fmt.Errorf("applying %s %s %q: %w", ev.Type, ev.Kind, ev.Name, err)
		}
		if ev.Type == controlplane.Bookmark {
			synced = true
		}
	}
}

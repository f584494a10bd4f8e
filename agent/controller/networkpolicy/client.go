// Package networkpolicy is the agent's view of the controller's policies: a
// client of the controller's watch API and a Cache of the node's span
// (policies, AppliedToGroups and AddressGroups), persisted so that a
// restarted agent can enforce before the controller is reachable.
package networkpolicy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// Handler receives the watch streams of Watch.
type Handler interface {
	// StartStream is called when a new stream begins: the first watch and
	// every re-list after a reconnect. The stream's ADDED events up to its
	// BOOKMARK are the complete state of the node.
	StartStream()
	// Handle applies one event. An error ends the stream; Watch then starts
	// a fresh one, which re-lists the whole state.
	Handle(controlplane.Event) error
}

// Watch streams node's span from the controller at baseURL (for example
// "http://198.18.0.1:10349") into h until ctx is done. When a stream breaks,
// it reconnects with exponential backoff and re-lists. It returns an error
// only for invalid arguments; it returns nil once ctx is done.
func Watch(ctx context.Context, baseURL, node string, h Handler) error {
	w, err := newWatcher(baseURL, node, h)
	if err != nil {
		return err
	}
	w.run(ctx)
	return nil
}

// watcher holds one agent's watch loop.
type watcher struct {
	url     string
	node    string
	handler Handler
	client  *http.Client
	backoff wait.Backoff // initial backoff; reset after a stream reaches its BOOKMARK
}

func newWatcher(baseURL, node string, h Handler) (*watcher, error) {
	if node == "" {
		return nil, errors.New("watch: node name is empty")
	}
	if h == nil {
		return nil, errors.New("watch: handler is nil")
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("watch: invalid controller URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("watch: controller URL %q must be http(s)://host:port", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + controlplane.WatchPath
	u.RawQuery = url.Values{"node": {node}}.Encode()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	transport.ResponseHeaderTimeout = 30 * time.Second
	return &watcher{
		url:     u.String(),
		node:    node,
		handler: h,
		// No overall timeout: a watch lasts as long as the connection.
		client:  &http.Client{Transport: transport},
		backoff: wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 1 << 30, Cap: 30 * time.Second},
	}, nil
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return false, fmt.Errorf("building the watch request: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := w.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("connecting to the controller: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return false, fmt.Errorf("the controller refused the watch: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	klog.FromContext(ctx).V(2).Info("Watching the controller", "node", w.node)
	w.handler.StartStream()
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

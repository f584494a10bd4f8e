package cniserver

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/cni/protocol"
)

func TestRunReplacesStaleSocket(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	// A socket file left by a crashed agent.
	stale, err := net.Listen("unix", f.srv.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.srv.Run(ctx) }()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", f.srv.cfg.SocketPath)
	}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get("http://agent" + protocol.PathStatus)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Errorf("STATUS before Reconcile: HTTP %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fi, err := os.Stat(f.srv.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %o, want 600", perm)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if _, err := os.Stat(f.srv.cfg.SocketPath); !os.IsNotExist(err) {
		t.Errorf("socket not removed after Run returned: %v", err)
	}
}

func TestRunRefusesNonSocket(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	f.srv.cfg.SocketPath = filepath.Join(t.TempDir(), "regular-file")
	if err := os.WriteFile(f.srv.cfg.SocketPath, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	err := f.srv.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Run() = %v, want a refusal", err)
	}
	if data, _ := os.ReadFile(f.srv.cfg.SocketPath); string(data) != "keep me" {
		t.Error("Run() touched a regular file")
	}
}

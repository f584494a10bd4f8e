package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/controller/certificate"
)

func TestServeTLS(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	ca, err := certificate.LoadOrCreateCA("")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServingCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, &tls.Config{Certificates: []tls.Certificate{cert}}, NewHandler(ctx, NewStore(1), allowAll))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	url := "https://" + ln.Addr().String() + HealthzPath

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := trusting.Get(url)
	if err != nil {
		t.Fatalf("GET with the CA: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("GET with the CA: %s %q", resp.Status, body)
	}

	if _, err := (&http.Client{}).Get(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA: err = %v, want a certificate error", err)
	}
	if err := Serve(ctx, ln, nil, NewHandler(ctx, NewStore(1), allowAll)); err == nil {
		t.Errorf("Serve without TLS configuration succeeded")
	}
}

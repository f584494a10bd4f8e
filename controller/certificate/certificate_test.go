package certificate

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"palisade.dev/palisade/controller/apis/controlplane"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("creating: %v", err)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	if string(again.PEM) != string(ca.PEM) {
		t.Errorf("a second start made a new CA instead of loading the saved one")
	}
	if st, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key file: %v, mode %v; want mode 0600", err, st.Mode().Perm())
	}
	inMemory, err := LoadOrCreateCA("")
	if err != nil || string(inMemory.PEM) == string(ca.PEM) {
		t.Errorf("LoadOrCreateCA(\"\") = %v; want a new CA", err)
	}

	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, CACertFile), ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(broken); err == nil {
		t.Errorf("a CA certificate without its key was accepted")
	}
}

func TestServingCertificate(t *testing.T) {
	ca, err := LoadOrCreateCA("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ServingCertificate(nil); err == nil {
		t.Errorf("a serving certificate without hosts was made")
	}
	cert, err := ca.ServingCertificate([]string{"198.18.0.1", "palisade-controller.kube-system.svc"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM does not parse")
	}
	for _, host := range []string{"198.18.0.1", "palisade-controller.kube-system.svc"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verifying for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "198.18.0.2"}); err == nil {
		t.Errorf("the certificate verified for a host it does not name")
	}
}

func TestPublishCA(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	get := func() string {
		t.Helper()
		cm, err := client.CoreV1().ConfigMaps(controlplane.CAConfigMapNamespace).Get(ctx, controlplane.CAConfigMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data[controlplane.CAConfigMapKey]
	}
	for _, pem := range []string{"first CA", "first CA", "rotated CA"} {
		if err := PublishCA(ctx, client, []byte(pem)); err != nil {
			t.Fatalf("PublishCA(%q): %v", pem, err)
		}
		if got := get(); got != pem {
			t.Errorf("ConfigMap holds %q, want %q", got, pem)
		}
	}
}

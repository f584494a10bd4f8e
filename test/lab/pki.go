package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// adminUser is the kubeconfig user; its token is in system:masters.
const adminUser = "palisade-admin"

// pki is the lab's credentials: service account signing keys, the admin
// token, and where kube-apiserver writes its self-signed serving cert.
type pki struct {
	dir         string
	SAKey       string // PKCS#1 private key (signs tokens; kcm's key)
	SAPub       string // PKIX public key (verifies tokens)
	TokenFile   string // kube-apiserver --token-auth-file
	CertDir     string // kube-apiserver --cert-dir
	ServingCert string // written by kube-apiserver: cert + its CA
	AdminToken  string
	// The aggregation layer: kube-apiserver's front proxy authenticates
	// to extension API servers (palisade-controller's read API) with
	// ProxyClientCert, signed by FrontProxyCA.
	FrontProxyCA string
	// FrontProxyCAKey signs FrontProxyCA's certificates: kept so that
	// tests can make a certificate of the right CA with a name the
	// controller must refuse.
	FrontProxyCAKey                 string
	ProxyClientCert, ProxyClientKey string
}

// frontProxyClientName is the proxy client certificate's common name
// (kube-apiserver --requestheader-allowed-names).
const frontProxyClientName = "front-proxy-client"

func newPKI(dir string) (*pki, error) {
	p := &pki{
		dir:         dir,
		SAKey:       filepath.Join(dir, "sa.key"),
		SAPub:       filepath.Join(dir, "sa.pub"),
		TokenFile:   filepath.Join(dir, "tokens.csv"),
		CertDir:     filepath.Join(dir, "apiserver"),
		ServingCert: filepath.Join(dir, "apiserver", "apiserver.crt"),

		FrontProxyCA:    filepath.Join(dir, "front-proxy-ca.crt"),
		FrontProxyCAKey: filepath.Join(dir, "front-proxy-ca.key"),
		ProxyClientCert: filepath.Join(dir, "front-proxy-client.crt"),
		ProxyClientKey:  filepath.Join(dir, "front-proxy-client.key"),
	}
	if err := os.MkdirAll(p.CertDir, 0o700); err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.SAKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(p.SAPub, "PUBLIC KEY", pub, 0o644); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p.AdminToken = hex.EncodeToString(tok)
	// Format: token,user,uid,"group1,group2"
	line := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", p.AdminToken, adminUser, adminUser)
	if err := os.WriteFile(p.TokenFile, []byte(line), 0o600); err != nil {
		return nil, err
	}
	if err := p.writeFrontProxy(); err != nil {
		return nil, fmt.Errorf("front proxy certificates: %w", err)
	}
	return p, nil
}

// writeFrontProxy makes the front proxy's CA and client certificate.
func (p *pki) writeFrontProxy() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "palisade-lab-front-proxy-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: frontProxyClientName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(p.FrontProxyCA, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return err
	}
	if err := writePEM(p.FrontProxyCAKey, "EC PRIVATE KEY", caKeyDER, 0o600); err != nil {
		return err
	}
	if err := writePEM(p.ProxyClientCert, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writePEM(p.ProxyClientKey, "EC PRIVATE KEY", keyDER, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// writeKubeconfig writes an admin kubeconfig for server, trusting the
// apiserver's serving cert bundle.
func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	const name = "palisade-lab"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: adminUser}
	cfg.CurrentContext = name
	return clientcmd.WriteToFile(*cfg, path)
}

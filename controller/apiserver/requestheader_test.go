package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cp "palisade.dev/palisade/controller/apis/controlplane"
)

// testCA is a CA that issues client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// client issues a client certificate with common name cn.
func (ca *testCA) client(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsClient issues a client certificate with common name cn, with its key.
func (ca *testCA) tlsClient(t *testing.T, cn string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// authConfigMap is the data kube-apiserver publishes, for ca.
func authConfigMap(ca *testCA) map[string]string {
	return map[string]string{
		keyRequestHeaderCA:           ca.pem,
		keyRequestHeaderAllowedNames: `["front-proxy-client"]`,
		keyRequestHeaderUsername:     `["X-Remote-User"]`,
		keyRequestHeaderGroup:        `["X-Remote-Group"]`,
		keyRequestHeaderExtraPrefix:  `["X-Remote-Extra-"]`,
	}
}

func TestParseRequestHeaderConfig(t *testing.T) {
	ca := newTestCA(t, "front-proxy-ca")
	with := func(key, value string) map[string]string {
		d := authConfigMap(ca)
		d[key] = value
		return d
	}
	for _, tc := range []struct {
		name    string
		data    map[string]string
		wantErr string
	}{
		{"complete", authConfigMap(ca), ""},
		{"no aggregation layer", with(keyRequestHeaderCA, ""), "without the aggregation layer"},
		{"not PEM", with(keyRequestHeaderCA, "junk"), "no PEM certificate"},
		{"bad JSON", with(keyRequestHeaderGroup, "X-Remote-Group"), keyRequestHeaderGroup},
		{"no username header", with(keyRequestHeaderUsername, "[]"), "no " + keyRequestHeaderUsername},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseRequestHeaderConfig(tc.data)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !cmp.Equal(c.AllowedNames, []string{"front-proxy-client"}) || !cmp.Equal(c.ExtraHeaderPrefixes, []string{"X-Remote-Extra-"}) {
					t.Errorf("parsed %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestRequestHeaderAuthenticate(t *testing.T) {
	ca, other := newTestCA(t, "front-proxy-ca"), newTestCA(t, "other-ca")
	config, err := ParseRequestHeaderConfig(authConfigMap(ca))
	if err != nil {
		t.Fatal(err)
	}
	proxy := ca.client(t, "front-proxy-client")
	request := func(cert *x509.Certificate, headers map[string][]string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "https://controller/apis/controlplane.palisade.dev/v1alpha1", nil)
		if cert != nil {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		}
		for k, v := range headers {
			r.Header[http.CanonicalHeaderKey(k)] = v
		}
		return r
	}
	alice := map[string][]string{
		"X-Remote-User":                 {"alice"},
		"X-Remote-Group":                {"devs", "system:authenticated"},
		"X-Remote-Extra-Scopes":         {"a", "b"},
		"X-Remote-Extra-Example.com%2f": {"c"},
	}
	for _, tc := range []struct {
		name    string
		r       *http.Request
		want    *User
		wantErr string
	}{
		{name: "front proxy", r: request(proxy, alice), want: &User{Name: "alice", Groups: []string{"devs", "system:authenticated"},
			Extra: map[string][]string{"scopes": {"a", "b"}, "example.com/": {"c"}}}},
		{name: "no TLS", r: httptest.NewRequest(http.MethodGet, "/", nil), wantErr: "no client certificate"},
		{name: "no certificate", r: request(nil, alice), wantErr: "no client certificate"},
		{name: "another CA", r: request(other.client(t, "front-proxy-client"), alice), wantErr: "not the front proxy's"},
		{name: "wrong name", r: request(ca.client(t, "someone"), alice), wantErr: `name "someone" is not one of`},
		{name: "no user header", r: request(proxy, map[string][]string{"X-Remote-Group": {"devs"}}), wantErr: "named no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := config.Authenticate(tc.r)
			if tc.wantErr != "" {
				var authErr *AuthError
				if !errors.As(err, &authErr) || authErr.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want a 401 AuthError with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, u); diff != "" {
				t.Errorf("user (-want +got):\n%s", diff)
			}
		})
	}
}

type fakeConfigMaps struct {
	data  map[string]string
	err   error
	calls int
}

func (f *fakeConfigMaps) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.ConfigMap, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: f.data}, nil
}

func TestRequestHeaderAuthenticatorReloads(t *testing.T) {
	old, rotated := newTestCA(t, "old"), newTestCA(t, "rotated")
	cms := &fakeConfigMaps{err: errors.New("connection refused")}
	a := NewRequestHeaderAuthenticator(cms, time.Minute)
	now := time.Now()
	a.now = func() time.Time { return now }
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("X-Remote-User", "alice")
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{rotated.client(t, "front-proxy-client")}}

	if _, err := a.Authenticate(context.Background(), r); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error %v, want the ConfigMap's read error", err)
	}
	cms.err, cms.data = nil, authConfigMap(old)
	now = now.Add(RequestHeaderRetryInterval)
	if _, err := a.Authenticate(context.Background(), r); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	cms.data = authConfigMap(rotated)
	if _, err := a.Authenticate(context.Background(), r); err == nil {
		t.Fatal("the configuration was read again before its TTL")
	}
	now = now.Add(time.Minute)
	if u, err := a.Authenticate(context.Background(), r); err != nil || u.Name != "alice" {
		t.Fatalf("after the TTL: %v, %v; want alice", u, err)
	}
	if cms.calls != 3 {
		t.Errorf("%d reads of the ConfigMap, want 3", cms.calls)
	}
}

// TestRequestHeaderAuthenticatorBacksOff checks that while the ConfigMap
// cannot be read, requests fail (503 through the read API) without each
// costing a read: at most one read per RequestHeaderRetryInterval.
func TestRequestHeaderAuthenticatorBacksOff(t *testing.T) {
	ca := newTestCA(t, "front-proxy-ca")
	cms := &fakeConfigMaps{err: errors.New("configmaps is forbidden")}
	a := NewRequestHeaderAuthenticator(cms, time.Minute)
	now := time.Now()
	a.now = func() time.Time { return now }
	api := NewReadAPI(context.Background(), fakeSource{snapshot: snapshot()}, a, &allowReviewer{allowed: map[string]bool{"alice": true}})
	get := func() int {
		r := httptest.NewRequest(http.MethodGet, "https://controller"+cp.VersionPath+"/networkpolicies", nil)
		r.Header.Set("X-Remote-User", "alice")
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{ca.client(t, "front-proxy-client")}}
		w := httptest.NewRecorder()
		api.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 10 {
		if code := get(); code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: %d, want 503 while the ConfigMap is unreadable", i, code)
		}
		now = now.Add(RequestHeaderRetryInterval / 10)
	}
	if cms.calls != 1 {
		t.Errorf("%d reads of the ConfigMap within %s, want 1", cms.calls, RequestHeaderRetryInterval)
	}
	now = now.Add(RequestHeaderRetryInterval / 10) // a retry interval after the failure
	if code := get(); code != http.StatusServiceUnavailable || cms.calls != 2 {
		t.Errorf("after the retry interval: %d with %d reads, want 503 after a second read", code, cms.calls)
	}
	cms.err, cms.data = nil, authConfigMap(ca)
	now = now.Add(RequestHeaderRetryInterval)
	if code := get(); code != http.StatusOK || cms.calls != 3 {
		t.Errorf("once readable: %d with %d reads, want 200 after a third read", code, cms.calls)
	}
	if code := get(); code != http.StatusOK || cms.calls != 3 {
		t.Errorf("within the TTL: %d with %d reads, want 200 without another read", code, cms.calls)
	}
}

// TestRequestHeaderAuthenticatorServesStale: once read, the configuration
// keeps serving while refreshing it fails, up to RequestHeaderMaxStale.
func TestRequestHeaderAuthenticatorServesStale(t *testing.T) {
	ca := newTestCA(t, "front-proxy-ca")
	cms := &fakeConfigMaps{data: authConfigMap(ca)}
	a := NewRequestHeaderAuthenticator(cms, time.Minute)
	now := time.Now()
	a.now = func() time.Time { return now }
	r := httptest.NewRequest(http.MethodGet, "https://controller"+cp.VersionPath+"/networkpolicies", nil)
	r.Header.Set("X-Remote-User", "alice")
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{ca.client(t, "front-proxy-client")}}
	if _, err := a.Authenticate(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	cms.err = errors.New("the apiserver is away")
	now = now.Add(2 * time.Minute) // past the TTL: a refresh, which fails
	if u, err := a.Authenticate(context.Background(), r); err != nil || u.Name != "alice" {
		t.Fatalf("with a failed refresh: %v, %v; want alice from the configuration read before", u, err)
	}
	if cms.calls != 2 {
		t.Errorf("%d reads, want 2 (the first and the failed refresh)", cms.calls)
	}
	now = now.Add(RequestHeaderMaxStale)
	if _, err := a.Authenticate(context.Background(), r); err == nil {
		t.Fatalf("a configuration older than %s still serves while refreshing it fails", RequestHeaderMaxStale)
	}
}

// TestReadAPIThroughTLS serves the read API as the controller does (TLS
// asking for, not requiring, client certificates; the real front proxy
// authenticator; the handler wrapper) and calls it as kube-apiserver's
// front proxy and as impostors.
func TestReadAPIThroughTLS(t *testing.T) {
	ca, other := newTestCA(t, "front-proxy-ca"), newTestCA(t, "other-ca")
	authn := NewRequestHeaderAuthenticator(&fakeConfigMaps{data: authConfigMap(ca)}, time.Minute)
	reviewer := &allowReviewer{allowed: map[string]bool{"alice": true}}
	api := NewReadAPI(context.Background(), fakeSource{snapshot: snapshot()}, authn, reviewer)
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("next")) })
	srv := httptest.NewUnstartedServer(api.Wrap(next))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	for _, tc := range []struct {
		name       string
		cert       *tls.Certificate
		user       string
		wantCode   int
		wantReason metav1.StatusReason
		wantMsg    string
	}{
		{name: "front proxy, authorized user", cert: ca.tlsClient(t, "front-proxy-client"), user: "alice", wantCode: http.StatusOK},
		{name: "front proxy, user without RBAC", cert: ca.tlsClient(t, "front-proxy-client"), user: "bob",
			wantCode: http.StatusForbidden, wantReason: metav1.StatusReasonForbidden, wantMsg: `user "bob" cannot list`},
		{name: "no certificate, forged headers", user: "alice",
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: "no client certificate"},
		{name: "another CA", cert: other.tlsClient(t, "front-proxy-client"), user: "alice",
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: "not the front proxy's"},
		{name: "name not allowed", cert: ca.tlsClient(t, "intruder"), user: "alice",
			wantCode: http.StatusUnauthorized, wantReason: cp.StatusReasonFrontProxyRejected, wantMsg: `name "intruder" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: roots}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			req, err := http.NewRequest(http.MethodGet, srv.URL+cp.VersionPath+"/networkpolicies", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Remote-User", tc.user)
			req.Header.Set("X-Remote-Group", "system:masters")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st metav1.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d: %+v", resp.StatusCode, tc.wantCode, st)
			}
			if tc.wantCode != http.StatusOK && (st.Kind != "Status" || st.Reason != tc.wantReason || !strings.Contains(st.Message, tc.wantMsg)) {
				t.Errorf("Status %+v, want reason %q and a message with %q", st, tc.wantReason, tc.wantMsg)
			}
		})
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}).Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "next" {
		t.Errorf("a path outside the read API got %q, want the next handler's answer", body)
	}
}

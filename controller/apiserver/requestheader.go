package apiserver

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// The ConfigMap in which kube-apiserver publishes how it authenticates to
// extension API servers (its front proxy), and the keys read from it.
const (
	AuthenticationConfigMapNamespace = "kube-system"
	AuthenticationConfigMapName      = "extension-apiserver-authentication"

	keyRequestHeaderCA           = "requestheader-client-ca-file"
	keyRequestHeaderAllowedNames = "requestheader-allowed-names"
	keyRequestHeaderUsername     = "requestheader-username-headers"
	keyRequestHeaderGroup        = "requestheader-group-headers"
	keyRequestHeaderExtraPrefix  = "requestheader-extra-headers-prefix"
)

// RequestHeaderConfig is how to recognize kube-apiserver's front proxy and
// read the user it proxies for.
type RequestHeaderConfig struct {
	// ClientCAs verify the proxy's client certificate.
	ClientCAs *x509.CertPool
	// AllowedNames are the accepted common names of that certificate;
	// empty accepts any name the CAs signed.
	AllowedNames []string
	// UsernameHeaders, GroupHeaders and ExtraHeaderPrefixes name the
	// headers that carry the user.
	UsernameHeaders     []string
	GroupHeaders        []string
	ExtraHeaderPrefixes []string
}

// ParseRequestHeaderConfig reads the data of ConfigMap
// kube-system/extension-apiserver-authentication.
func ParseRequestHeaderConfig(data map[string]string) (*RequestHeaderConfig, error) {
	caPEM := data[keyRequestHeaderCA]
	if caPEM == "" {
		return nil, fmt.Errorf("no %s: kube-apiserver runs without the aggregation layer (--requestheader-client-ca-file)", keyRequestHeaderCA)
	}
	c := &RequestHeaderConfig{ClientCAs: x509.NewCertPool()}
	if !c.ClientCAs.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, fmt.Errorf("%s holds no PEM certificate", keyRequestHeaderCA)
	}
	for key, dst := range map[string]*[]string{
		keyRequestHeaderAllowedNames: &c.AllowedNames,
		keyRequestHeaderUsername:     &c.UsernameHeaders,
		keyRequestHeaderGroup:        &c.GroupHeaders,
		keyRequestHeaderExtraPrefix:  &c.ExtraHeaderPrefixes,
	} {
		if v := data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), dst); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	if len(c.UsernameHeaders) == 0 {
		return nil, fmt.Errorf("no %s", keyRequestHeaderUsername)
	}
	return c, nil
}

// User is who a request is made for.
type User struct {
	Name   string
	Groups []string
	Extra  map[string][]string
}

// Authenticate checks that r comes from the front proxy (a TLS client
// certificate signed by ClientCAs with an allowed name) and returns the
// user it names. Refusals are *AuthError with http.StatusUnauthorized.
func (c *RequestHeaderConfig) Authenticate(r *http.Request) (*User, error) {
	refuse := func(format string, args ...any) error {
		return &AuthError{Status: http.StatusUnauthorized, FrontProxy: true, Reason: "not kube-apiserver's front proxy: " +
			fmt.Sprintf(format, args...) + "; the read API must be reached through kube-apiserver (e.g. kubectl get --raw " + controlplane.VersionPath +
			"), whose --proxy-client-cert-file must be signed by its --requestheader-client-ca-file and named in --requestheader-allowed-names"}
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, refuse("no client certificate")
	}
	certs := r.TLS.PeerCertificates
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{
		Roots: c.ClientCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, refuse("the client certificate is not the front proxy's: %v", err)
	}
	if cn := certs[0].Subject.CommonName; len(c.AllowedNames) > 0 && !slices.Contains(c.AllowedNames, cn) {
		return nil, refuse("the client certificate's name %q is not one of the front proxy's %q", cn, c.AllowedNames)
	}
	u := &User{}
	for _, h := range c.UsernameHeaders {
		if u.Name = strings.TrimSpace(r.Header.Get(h)); u.Name != "" {
			break
		}
	}
	if u.Name == "" {
		return nil, refuse("the front proxy named no user (headers %q)", c.UsernameHeaders)
	}
	for _, h := range c.GroupHeaders {
		u.Groups = append(u.Groups, r.Header.Values(h)...)
	}
	for name, values := range r.Header {
		for _, prefix := range c.ExtraHeaderPrefixes {
			if len(name) > len(prefix) && strings.EqualFold(name[:len(prefix)], prefix) {
				key := strings.ToLower(name[len(prefix):])
				if k, err := url.PathUnescape(key); err == nil {
					key = k
				}
				if u.Extra == nil {
					u.Extra = map[string][]string{}
				}
				u.Extra[key] = append(u.Extra[key], values...)
			}
		}
	}
	return u, nil
}

// ConfigMapGetter gets ConfigMaps of one namespace; a clientset's
// CoreV1().ConfigMaps(namespace) is one.
type ConfigMapGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.ConfigMap, error)
}

// RequestHeaderAuthenticator authenticates the front proxy with the
// configuration in ConfigMap extension-apiserver-authentication, read
// again once it is older than a TTL (so that rotated CAs are picked up).
// A failed read is retried at most once every RequestHeaderRetryInterval;
// meanwhile requests are served with the configuration read before (up to
// RequestHeaderMaxStale old) or, without one, fail with the read's error.
type RequestHeaderAuthenticator struct {
	configMaps ConfigMapGetter
	ttl        time.Duration
	now        func() time.Time

	mu      sync.Mutex
	config  *RequestHeaderConfig
	loaded  time.Time
	failed  time.Time // of the last failed read, while the error stands
	lastErr error
}

// RequestHeaderRetryInterval is how long a failed read of the front
// proxy's configuration is reused before the ConfigMap is read again.
const RequestHeaderRetryInterval = 5 * time.Second

// RequestHeaderMaxStale is how long a configuration read earlier keeps
// serving while refreshing it fails: a passing apiserver hiccup does not
// turn every read-API request away.
const RequestHeaderMaxStale = 10 * time.Minute

// NewRequestHeaderAuthenticator reads the ConfigMap through configMaps (of
// namespace kube-system) and keeps it for ttl.
func NewRequestHeaderAuthenticator(configMaps ConfigMapGetter, ttl time.Duration) *RequestHeaderAuthenticator {
	return &RequestHeaderAuthenticator{configMaps: configMaps, ttl: ttl, now: time.Now}
}

// Authenticate returns the user r is proxied for: *AuthError if refused,
// another error if the configuration cannot be read.
func (a *RequestHeaderAuthenticator) Authenticate(ctx context.Context, r *http.Request) (*User, error) {
	c, err := a.current(ctx)
	if err != nil {
		return nil, err
	}
	return c.Authenticate(r)
}

func (a *RequestHeaderAuthenticator) current(ctx context.Context) (*RequestHeaderConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.config != nil && now.Sub(a.loaded) < a.ttl {
		return a.config, nil
	}
	if a.lastErr != nil && now.Sub(a.failed) < RequestHeaderRetryInterval {
		return a.staleOr(now, a.lastErr)
	}
	c, err := a.read(ctx)
	if err != nil {
		if ctx.Err() == nil { // not the request's own cancellation
			a.failed, a.lastErr = now, err
		}
		return a.staleOr(now, err)
	}
	a.config, a.loaded, a.lastErr = c, now, nil
	return c, nil
}

// staleOr returns the configuration read last if it is younger than
// RequestHeaderMaxStale, else err.
func (a *RequestHeaderAuthenticator) staleOr(now time.Time, err error) (*RequestHeaderConfig, error) {
	if a.config != nil && now.Sub(a.loaded) < RequestHeaderMaxStale {
		return a.config, nil
	}
	return nil, err
}

func (a *RequestHeaderAuthenticator) read(ctx context.Context) (*RequestHeaderConfig, error) {
	cm, err := a.configMaps.Get(ctx, AuthenticationConfigMapName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", AuthenticationConfigMapNamespace, AuthenticationConfigMapName, err)
	}
	c, err := ParseRequestHeaderConfig(cm.Data)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", AuthenticationConfigMapNamespace, AuthenticationConfigMapName, err)
	}
	return c, nil
}

// SubjectAccessReviewer creates SubjectAccessReviews; a clientset's
// AuthorizationV1().SubjectAccessReviews() is one.
type SubjectAccessReviewer interface {
	Create(ctx context.Context, sar *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

// authorizeUser asks the apiserver whether u may do verb on the read API's
// resource (name and namespace optional). A denial is an *AuthError with
// http.StatusForbidden that says which permission is missing.
func authorizeUser(ctx context.Context, reviewer SubjectAccessReviewer, u *User, verb, resource, namespace, name string) error {
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	res, err := reviewer.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Name, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group: controlplane.GroupName, Version: controlplane.Version, Resource: resource,
			Verb: verb, Namespace: namespace, Name: name,
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("authorizing the request (SubjectAccessReview): %w", err)
	}
	if res.Status.Allowed {
		return nil
	}
	scope := "at the cluster scope"
	if namespace != "" {
		scope = fmt.Sprintf("in namespace %q", namespace)
	}
	msg := fmt.Sprintf("user %q cannot %s resource %q in API group %q %s: it needs RBAC permission to %s %s.%s (the ClusterRole palisade-viewer grants every read of Palisade's API)",
		u.Name, verb, resource, controlplane.GroupName, scope, verb, resource, controlplane.GroupName)
	if res.Status.Reason != "" {
		msg += "; " + res.Status.Reason
	}
	return &AuthError{Status: http.StatusForbidden, Reason: msg}
}

package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"palisade.dev/palisade/agent/debug"
)

func TestValidateAPIBindAddress(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		wantErr bool
	}{
		{"127.0.0.1:10350", false},
		{":10350", false},
		{"[::1]:10350", false},
		{"127.0.0.1", true},
		{"127.0.0.1:", true},
		{"", true},
	} {
		o := NewOptions()
		o.NodeName, o.ControllerURL = "node1", "https://198.18.0.1:10349"
		o.APIBindAddress = tc.addr
		err := o.Validate()
		if got := err != nil && strings.Contains(err.Error(), "--api-bind-address"); got != tc.wantErr {
			t.Errorf("Validate with --api-bind-address %q: %v, want an --api-bind-address error: %v", tc.addr, err, tc.wantErr)
		}
	}
}

// TestDebugAPIOnlyOnLoopback: the debug API is served on a loopback
// --api-bind-address; elsewhere only with
// --enable-debug-api-on-non-loopback, and answers 403 otherwise.
func TestDebugAPIOnlyOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		allow bool
		serve bool
	}{
		{"127.0.0.1:10350", false, true},
		{"127.0.0.5:10350", false, true},
		{"[::1]:10350", false, true},
		{"localhost:10350", false, true},
		{":10350", false, false},
		{"0.0.0.0:10350", false, false},
		{"[::]:10350", false, false},
		{"198.18.0.5:10350", false, false},
		{"node1.example:10350", false, false},
		{"198.18.0.5:10350", true, true},
		{":10350", true, true},
	} {
		o := NewOptions()
		o.APIBindAddress, o.EnableDebugAPIOnNonLoopback = tc.addr, tc.allow
		register, why := o.debugRoutes(&debug.Server{})
		mux := http.NewServeMux()
		register(mux)
		for _, path := range []string{debug.FlowsPath, debug.TracePath} {
			// Without from and to, a served trace answers 400 before
			// reading anything; flows would need a datapath.
			target := path
			if path == debug.FlowsPath {
				target += "?rule=x"
			}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
			refused := rec.Code == http.StatusForbidden
			if refused == tc.serve || refused != (why != "") {
				t.Errorf("--api-bind-address %s, --enable-debug-api-on-non-loopback=%v: GET %s = %d %q (why %q), want served: %v",
					tc.addr, tc.allow, path, rec.Code, rec.Body, why, tc.serve)
			}
			if refused && !strings.Contains(rec.Body.String(), "--enable-debug-api-on-non-loopback") {
				t.Errorf("refusal does not say how to allow it: %q", rec.Body)
			}
		}
	}
}

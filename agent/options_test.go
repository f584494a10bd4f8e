package agent

import (
	"strings"
	"testing"
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

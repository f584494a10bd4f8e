package controller

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestOptions(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		wantAddress string
		wantErr     string
	}{
		{name: "defaults", wantAddress: "0.0.0.0:10349"},
		{name: "IPv6 bind address", args: []string{"--bind-address=::1", "--port=8443"}, wantAddress: "[::1]:8443"},
		{name: "host name is not an IP", args: []string{"--bind-address=localhost"}, wantErr: `--bind-address "localhost" is not an IP address`},
		{name: "port out of range", args: []string{"--port=70000"}, wantErr: "--port 70000 is not in 1-65535"},
		{name: "agent service account needs a namespace", args: []string{"--agent-service-account=palisade-agent"}, wantErr: `--agent-service-account "palisade-agent" is not namespace/name`},
		{name: "empty SAN", args: []string{"--tls-san=a,,b"}, wantErr: "--tls-san has an empty entry"},
		{name: "negative TTL", args: []string{"--token-review-ttl=-1s"}, wantErr: "--token-review-ttl -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewOptions()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err := o.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if got := o.Address(); got != tt.wantAddress {
				t.Errorf("Address() = %q, want %q", got, tt.wantAddress)
			}
		})
	}
}

package controller

import (
	"os"
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
		{name: "metrics on a specific address", args: []string{"--metrics-bind-address=198.18.0.1:9000", "--enable-pprof"}, wantAddress: "0.0.0.0:10349"},
		{name: "metrics disabled", args: []string{"--metrics-bind-address="}, wantAddress: "0.0.0.0:10349"},
		{name: "metrics address without a port", args: []string{"--metrics-bind-address=198.18.0.1"}, wantErr: `--metrics-bind-address: "198.18.0.1" is not host:port`},
		{name: "metrics address with a host name", args: []string{"--metrics-bind-address=localhost:1"}, wantErr: `host "localhost" of "localhost:1" is not an IP address`},
		{name: "metrics port out of range", args: []string{"--metrics-bind-address=:70000"}, wantErr: `port "70000" of ":70000" is not in 0-65535`},
		{name: "metrics on the API port", args: []string{"--metrics-bind-address=:10349"}, wantErr: "--metrics-bind-address :10349 and the agent-facing API (--bind-address, --port) 0.0.0.0:10349 use the same port"},
		{name: "metrics on the API port of another address", args: []string{"--bind-address=198.18.0.1", "--metrics-bind-address=127.0.0.1:10349"}, wantAddress: "198.18.0.1:10349"},
		{name: "metrics on the API port and address", args: []string{"--bind-address=198.18.0.1", "--metrics-bind-address=198.18.0.1:10349"}, wantErr: "use the same port"},
		{name: "pprof without a metrics server", args: []string{"--metrics-bind-address=", "--enable-pprof"}, wantErr: "--enable-pprof needs --metrics-bind-address"},
		{name: "short lease", args: []string{"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=500ms"}, wantAddress: "0.0.0.0:10349"},
		{name: "lease not longer than the renew deadline", args: []string{"--leader-elect-lease-duration=10s"}, wantErr: "--leader-elect-lease-duration 10s must be longer than --leader-elect-renew-deadline 10s"},
		{name: "renew deadline too close to the retry period", args: []string{"--leader-elect-retry-period=9s"}, wantErr: "--leader-elect-renew-deadline 10s must be longer than 1.2 × --leader-elect-retry-period 9s"},
		{name: "zero retry period", args: []string{"--leader-elect-retry-period=0s"}, wantErr: "--leader-elect-retry-period 0s is not positive"},
		{name: "empty lease namespace", args: []string{"--leader-elect-namespace="}, wantErr: "--leader-elect-namespace is empty"},
		{name: "no election, no lease checks", args: []string{"--leader-elect=false", "--leader-elect-namespace=", "--leader-elect-retry-period=0s"}, wantAddress: "0.0.0.0:10349"},
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

func TestDefaultNamespace(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "")
	if got := NewOptions().LeaderElectNamespace; got != DefaultNamespace {
		t.Errorf("without POD_NAMESPACE: %q, want %q", got, DefaultNamespace)
	}
	t.Setenv("POD_NAMESPACE", "net-system")
	if got := NewOptions().LeaderElectNamespace; got != "net-system" {
		t.Errorf("with POD_NAMESPACE=net-system: %q", got)
	}
}

func TestIdentity(t *testing.T) {
	a, err := identity()
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if a == b || !strings.HasPrefix(a, host+"_") || len(a) != len(host)+1+8 {
		t.Errorf("identities %q and %q: want distinct %s_<8 hex digits>", a, b, host)
	}
}

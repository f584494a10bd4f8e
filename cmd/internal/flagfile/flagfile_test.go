package flagfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		wantErr string
		wantMTU int
		wantBr  string
	}{
		{name: "file values", file: "mtu: 1400\nbridge: br-x\n", wantMTU: 1400, wantBr: "br-x"},
		{name: "command line wins", file: "mtu: 1400\nbridge: br-x\n", args: []string{"--mtu=9000"}, wantMTU: 9000, wantBr: "br-x"},
		{name: "empty file keeps defaults", file: "", wantMTU: 1500, wantBr: "br-int"},
		{name: "unknown key", file: "mtuu: 1\n", wantErr: `unknown key "mtuu"`},
		{name: "bad value", file: "mtu: lots\n", wantErr: `key "mtu"`},
		{name: "nested value", file: "bridge: {a: b}\n", wantErr: "single value"},
		{name: "not yaml", file: "mtu: [\n", wantErr: "not valid YAML"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
			mtu := fs.Int("mtu", 1500, "")
			br := fs.String("bridge", "br-int", "")
			cfg := Register(fs)
			path := filepath.Join(t.TempDir(), "c.conf")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := fs.Parse(append(tc.args, "--config="+path)); err != nil {
				t.Fatal(err)
			}
			err := Load(fs, *cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *mtu != tc.wantMTU || *br != tc.wantBr {
				t.Errorf("mtu=%d bridge=%s, want %d %s", *mtu, *br, tc.wantMTU, tc.wantBr)
			}
		})
	}
}

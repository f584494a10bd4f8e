package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteConf(t *testing.T) {
	shipped := filepath.Join("..", "..", "build", "yamls", "conf")
	custom := t.TempDir()
	for _, f := range []string{agentConf, controllerConf} {
		if err := os.WriteFile(filepath.Join(custom, f), []byte("# "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	partial := t.TempDir()
	if err := os.WriteFile(filepath.Join(partial, agentConf), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src string
		want      string // the directory whose files Up must use
		err       string
	}{
		{name: "embedded copies of the shipped files", src: "", want: shipped},
		{name: "a configuration directory", src: custom, want: custom},
		{name: "a file missing", src: partial, err: controllerConf},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := writeConf(dir, tc.src)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("writeConf = %v, want an error naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{agentConf, controllerConf} {
				want, err := os.ReadFile(filepath.Join(tc.want, f))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(ConfFile(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from %s:\n%s", ConfFile(dir, f), filepath.Join(tc.want, f), got)
				}
			}
		})
	}
}

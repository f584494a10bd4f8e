package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/test/lab/probe"
)

func TestSelectPods(t *testing.T) {
	all := []probe.Pod{
		{Namespace: "x", Name: "a", IP: "198.19.0.2"},
		{Namespace: "x", Name: "b", IP: "198.19.0.3"},
		{Namespace: "y", Name: "a", IP: "198.19.0.4"},
		{Namespace: "y", Name: "c"},
	}
	keys := func(ps []probe.Pod) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Key())
		}
		return out
	}
	tests := []struct {
		name             string
		namespaces, pods []string
		want, noIP       []string
	}{
		{"all", nil, nil, []string{"x/a", "x/b", "y/a"}, []string{"y/c"}},
		{"namespace", []string{"y"}, nil, []string{"y/a"}, []string{"y/c"}},
		{"bare name", nil, []string{"a"}, []string{"x/a", "y/a"}, nil},
		{"qualified name", nil, []string{"x/a", "y/c"}, []string{"x/a"}, []string{"y/c"}},
		{"both", []string{"x"}, []string{"a"}, []string{"x/a"}, nil},
	}
	for _, tc := range tests {
		got, noIP := selectPods(all, tc.namespaces, tc.pods)
		if diff := cmp.Diff(tc.want, keys(got)); diff != "" {
			t.Errorf("%s: selected (-want +got):\n%s", tc.name, diff)
		}
		if diff := cmp.Diff(tc.noIP, keys(noIP)); diff != "" {
			t.Errorf("%s: no IP (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestRunBadInput(t *testing.T) {
	tests := []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"pods", "--dir", t.TempDir(), "-o", "yaml"}, 1, "invalid output format"},
		{[]string{"probe", "--dir", t.TempDir()}, 1, "no pods with an IP"},
		{[]string{"runtime"}, 1, "--node is required"},
		{[]string{"down", "extra"}, 2, "unexpected arguments"},
		{[]string{"up", "--nodes", "x"}, 2, "invalid argument"},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.wantErr) {
			t.Errorf("Run(%q) = %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), tc.code, tc.wantErr)
		}
	}
}

func TestEnvWithoutLab(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"env", "--dir", dir, "--k8s-bin-dir", "/k8s/bin"}, &out, &errOut); code != 0 {
		t.Fatalf("env: exit %d: %s", code, errOut.String())
	}
	want := "export KUBECONFIG=" + dir + "/kubeconfig\nexport PATH=/k8s/bin:$PATH\n"
	if out.String() != want {
		t.Errorf("env = %q, want %q", out.String(), want)
	}
}

func TestPodsEmptyJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), []string{"pods", "--dir", t.TempDir(), "-o", "json"}, &out, &errOut); code != 0 {
		t.Fatalf("pods: exit %d: %s", code, errOut.String())
	}
	if strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("pods -o json = %q, want []", out.String())
	}
}

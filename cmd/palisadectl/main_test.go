package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{args: nil, code: 0, out: "Commands:"},
		{args: []string{"--help"}, code: 0, out: "version"},
		{args: []string{"nope"}, code: 2, err: `unknown command "nope"`},
		{args: []string{"version"}, code: 0, out: "VERSION"},
		{args: []string{"version", "-o", "json"}, code: 0, out: `"version": "dev"`},
		{args: []string{"version", "-o", "yaml"}, code: 0, out: "version: dev"},
		{args: []string{"version", "-o", "xml"}, code: 1, err: `unknown output format "xml"`},
		{args: []string{"version", "--bogus"}, code: 1, err: "unknown flag: --bogus"},
		{args: []string{"version", "--help"}, code: 0, out: "--output"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("stdout %q does not contain %q", out.String(), tc.out)
			}
			if !strings.Contains(errb.String(), tc.err) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tc.err)
			}
		})
	}
}

package probe

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTable(t *testing.T) {
	r := &Result{
		Port: 80, Protocol: TCP,
		Pods: []string{"x/a", "x/bb", "y/c"},
		Cells: []Cell{
			{From: "x/a", To: "x/a", Allowed: true}, {From: "x/a", To: "x/bb", Allowed: true}, {From: "x/a", To: "y/c"},
			{From: "x/bb", To: "x/a"}, {From: "x/bb", To: "x/bb", Allowed: true}, {From: "x/bb", To: "y/c"},
			{From: "y/c", To: "x/a", Allowed: true}, {From: "y/c", To: "x/bb", Allowed: true}, {From: "y/c", To: "y/c", Allowed: true},
		},
	}
	want := "" +
		"TCP/80  x/a  x/bb  y/c\n" +
		"x/a     .    .     X\n" +
		"x/bb    X    .     X\n" +
		"y/c     .    .     .\n" +
		"6/9 allowed\n"
	if diff := cmp.Diff(want, r.Table()); diff != "" {
		t.Errorf("Table() mismatch (-want +got):\n%s", diff)
	}
	if allowed, found := r.Allowed("x/bb", "x/a"); allowed || !found {
		t.Errorf("Allowed(x/bb, x/a) = %v, %v; want false, true", allowed, found)
	}
	if _, found := r.Allowed("x/a", "z/z"); found {
		t.Error("Allowed found a pod that is not in the matrix")
	}
}

func TestResultJSON(t *testing.T) {
	r := &Result{Port: 53, Protocol: UDP, Pods: []string{"x/a"}, Cells: []Cell{{From: "x/a", To: "x/a", Error: "i/o timeout"}}}
	got, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"port":53,"protocol":"UDP","pods":["x/a"],"cells":[{"from":"x/a","to":"x/a","allowed":false,"error":"i/o timeout"}]}`
	if string(got) != want {
		t.Errorf("JSON = %s\nwant   %s", got, want)
	}
}

func TestMatrixRejectsBadInput(t *testing.T) {
	pods := []Pod{{Namespace: "x", Name: "a", IP: "198.19.0.2", Netns: "/var/run/netns/plab-pa"}}
	tests := []struct {
		name    string
		pods    []Pod
		port    int
		proto   string
		timeout time.Duration
	}{
		{"protocol", pods, 80, "SCTP", time.Second},
		{"port zero", pods, 0, TCP, time.Second},
		{"port too big", pods, 70000, TCP, time.Second},
		{"timeout", pods, 80, TCP, 0},
		{"duplicate pod", append(pods, pods[0]), 80, TCP, time.Second},
	}
	for _, tc := range tests {
		if _, err := Matrix(context.Background(), tc.pods, tc.port, tc.proto, tc.timeout); err == nil {
			t.Errorf("%s: Matrix succeeded, want an error", tc.name)
		}
	}
}

func TestOneNeedsNamespaceAndIP(t *testing.T) {
	a := Pod{Namespace: "x", Name: "a"}
	b := Pod{Namespace: "x", Name: "b", Netns: "/var/run/netns/plab-pb"}
	if err := One(context.Background(), a, b, 80, TCP, time.Second); err == nil {
		t.Error("probe from a pod without netns succeeded")
	}
	if err := One(context.Background(), b, a, 80, TCP, time.Second); err == nil {
		t.Error("probe to a pod without IP succeeded")
	}
}

func TestNormalizeProtocol(t *testing.T) {
	for in, want := range map[string]string{"tcp": TCP, "UDP": UDP, "Udp": UDP} {
		if got, err := NormalizeProtocol(in); err != nil || got != want {
			t.Errorf("NormalizeProtocol(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeProtocol("icmp"); err == nil {
		t.Error("NormalizeProtocol(icmp) succeeded")
	}
}

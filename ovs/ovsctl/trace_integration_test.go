//go:build integration

package ovsctl

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"palisade.dev/palisade/test/netnstest"
	"palisade.dev/palisade/test/ovsinstance"
)

// TestIntegrationTrace traces a packet through a ct() recirculation: the
// conntrack state it resumes with decides the verdict.
func TestIntegrationTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "palctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Own network namespace: the bridge's internal port is a device.
	ns := netnstest.New(t, "trace-")
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Netns: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Stop() })
	if _, err := inst.Vsctl("add-br", "br-tr", "--", "set", "bridge", "br-tr", "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"table=0,ip,actions=ct(table=1,zone=7)",
		"table=1,ct_state=+new+trk,ip,actions=drop",
		"table=1,ct_state=+est+trk,ip,actions=output:LOCAL",
	} {
		if _, err := inst.OfctlBridge("br-tr", "add-flow", f); err != nil {
			t.Fatalf("add-flow %s: %v", f, err)
		}
	}
	const flow = "tcp,in_port=9,nw_src=198.18.0.1,nw_dst=198.18.0.2,tcp_dst=80"
	for _, tc := range []struct {
		ctNext []string
		drop   bool
	}{
		{nil, true},
		{[]string{"trk,new"}, true},
		{[]string{"trk,est"}, false},
	} {
		out, err := Trace(ctx, inst.VswitchdCtl, "br-tr", flow, tc.ctNext...)
		if err != nil {
			t.Fatalf("Trace(ct-next %v): %v", tc.ctNext, err)
		}
		if dropped := strings.Contains(out, "Datapath actions: drop"); dropped != tc.drop {
			t.Errorf("Trace(ct-next %v): dropped %v, want %v:\n%s", tc.ctNext, dropped, tc.drop, out)
		}
	}
	if _, err := Trace(ctx, inst.VswitchdCtl, "br-tr", "udp,tp_src=1"); err == nil || !strings.Contains(err.Error(), "prerequisites") {
		t.Errorf("a bad flow must fail with OVS's message, got %v", err)
	}
	if _, err := Trace(ctx, inst.VswitchdCtl, "no-such-br", flow); err == nil {
		t.Error("tracing on a missing bridge must fail")
	}
}

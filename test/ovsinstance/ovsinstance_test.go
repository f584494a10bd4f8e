//go:build integration

package ovsinstance

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartBridgeFlowsStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "ovsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	inst, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("Stop in cleanup: %v", err)
		}
	})
	if inst.MgmtSock != filepath.Join(dir, "br-int.mgmt") || inst.DBEndpoint != "unix:"+filepath.Join(dir, "db.sock") {
		t.Fatalf("unexpected paths: %+v", inst)
	}
	if out, err := inst.Appctl("version"); err != nil || !strings.Contains(out, "ovs-vswitchd") {
		t.Fatalf("Appctl version = %q, %v", out, err)
	}
	if _, err := inst.Vsctl("add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail_mode=secure"); err != nil {
		t.Fatalf("add-br: %v", err)
	}
	if _, err := os.Stat(inst.MgmtSock); err != nil {
		t.Fatalf("management socket missing after add-br: %v", err)
	}
	if err := inst.AddFlows("br-int", []string{"table=0,priority=10,ip actions=drop", "table=0,priority=5 actions=NORMAL"}); err != nil {
		t.Fatalf("AddFlows: %v", err)
	}
	flows, err := inst.DumpFlows("br-int")
	if err != nil {
		t.Fatalf("DumpFlows: %v", err)
	}
	want := []string{"priority=10,ip actions=drop", "priority=5 actions=NORMAL"}
	if strings.Join(flows, "\n") != strings.Join(want, "\n") {
		t.Fatalf("DumpFlows = %q, want %q", flows, want)
	}
	if out, err := inst.Ofctl("--names", "dump-flows", "table=0,ip"); err != nil || !strings.Contains(out, "priority=10,ip") {
		t.Fatalf("Ofctl dump-flows with filter = %q, %v", out, err)
	}

	if err := inst.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if out, err := inst.Vsctl("list-br"); err != nil || strings.TrimSpace(out) != "br-int" {
		t.Fatalf("after restart list-br = %q, %v (database should survive)", out, err)
	}

	if err := inst.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := inst.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := inst.Appctl("version"); err == nil {
		t.Fatalf("ovs-vswitchd still answers after Stop")
	}
}

func TestStartInNetns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ns = "ovsi-test"
	if _, err := run(ctx, nil, "", "ip", "netns", "add", ns); err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { _, _ = run(context.Background(), nil, "", "ip", "netns", "delete", ns) })
	dir, err := os.MkdirTemp("", "ovsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	inst, err := Start(ctx, Options{Dir: dir, Netns: ns, Bridge: "br-x"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = inst.Stop() })
	if _, err := inst.Vsctl("add-br", "br-x", "--", "set", "bridge", "br-x", "datapath_type=netdev"); err != nil {
		t.Fatalf("add-br: %v", err)
	}
	// The bridge's internal port is a tap device in the daemon's netns.
	out, err := run(ctx, nil, "", "ip", "netns", "exec", ns, "ip", "link", "show", "br-x")
	if err != nil {
		t.Fatalf("bridge device not in netns %s: %v", ns, err)
	}
	if !strings.Contains(out, "br-x") {
		t.Fatalf("ip link show br-x = %q", out)
	}
	if _, err := inst.Ofctl("show"); err != nil {
		t.Fatalf("Ofctl show: %v", err)
	}
}

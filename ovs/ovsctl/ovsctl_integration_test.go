//go:build integration

package ovsctl

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"palisade.dev/palisade/test/ovsinstance"
)

func TestIntegrationAppctl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "palctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: dir, Bridge: "br-ctl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Stop() })

	out, err := Appctl(ctx, inst.VswitchdCtl, "version")
	if err != nil || !strings.Contains(out, "ovs-vswitchd") {
		t.Fatalf("version = %q, %v", out, err)
	}
	if _, err := Appctl(ctx, inst.VswitchdCtl, "revalidator/purge"); err != nil {
		t.Fatalf("revalidator/purge: %v", err)
	}
	if _, err := Appctl(ctx, inst.VswitchdCtl, "no/such-command"); err == nil || !strings.Contains(err.Error(), "no/such-command") {
		t.Fatalf("an unknown command must fail with the daemon's message, got %v", err)
	}
	if _, err := Appctl(ctx, dir+"/missing.ctl", "version"); err == nil {
		t.Fatal("a missing socket must fail")
	}
}

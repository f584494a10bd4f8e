package cniserver

import (
	"errors"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

func TestGarbageCollect(t *testing.T) {
	f := newFixture(t, "198.18.4.0/24")
	_, ctx := ktesting.NewTestContext(t)
	exists := map[string]bool{}
	lookup := func(ns, name string) bool { return exists[ns+"/"+name] }
	if n, err := f.srv.GarbageCollect(ctx, lookup, 0); n != 0 || err != nil {
		t.Fatalf("GarbageCollect before Reconcile = %d, %v; want nothing done", n, err)
	}
	f.reconcile(t)
	for _, p := range []string{"a", "b", "c"} {
		if resp, _ := f.do(t, addRequest("c-"+p, p)); resp.Error != nil {
			t.Fatal(resp.Error)
		}
	}
	exists["ns1/a"], exists["ns1/b"] = true, true

	// c is gone: first seen missing, collected once the grace period passed.
	if n, err := f.srv.GarbageCollect(ctx, lookup, time.Hour); n != 0 || err != nil {
		t.Fatalf("first pass = %d, %v; want nothing collected yet", n, err)
	}
	if n, err := f.srv.GarbageCollect(ctx, lookup, time.Hour); n != 0 || err != nil {
		t.Fatalf("pass within the grace period = %d, %v", n, err)
	}
	// b goes missing, then comes back before it is collected.
	delete(exists, "ns1/b")
	if n, err := f.srv.GarbageCollect(ctx, lookup, 0); n != 1 || err != nil {
		t.Fatalf("pass after the grace period = %d, %v; want c collected", n, err)
	}
	exists["ns1/b"] = true
	if n, err := f.srv.GarbageCollect(ctx, lookup, 0); n != 0 || err != nil {
		t.Fatalf("b came back, but GarbageCollect = %d, %v", n, err)
	}
	if _, ok := f.store.GetByContainerID("c-c"); ok {
		t.Error("c is still attached")
	}
	if _, ok := f.ipam.Owners()["c-c"]; ok {
		t.Error("c's IP was not released")
	}
	if len(f.store.List()) != 2 || len(f.ipam.Owners()) != 2 || len(f.bridge.ports) != 2 || len(f.net.links) != 2 {
		t.Errorf("after GC: %d attached, %d IPs, %d ports, %d veths; want 2 of each",
			len(f.store.List()), len(f.ipam.Owners()), len(f.bridge.ports), len(f.net.links))
	}
	// A failing detach is reported and retried on the next pass.
	delete(exists, "ns1/a")
	f.dp.failDel = errors.New("ovs refused")
	_, _ = f.srv.GarbageCollect(ctx, lookup, 0) // a is seen missing
	if _, err := f.srv.GarbageCollect(ctx, lookup, 0); err == nil {
		t.Fatal("a failed detach was not reported")
	}
	f.dp.failDel = nil
	if n, err := f.srv.GarbageCollect(ctx, lookup, 0); n != 1 || err != nil {
		t.Fatalf("retry = %d, %v; want a collected", n, err)
	}
}

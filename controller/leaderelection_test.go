package controller

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	"palisade.dev/palisade/controller/metrics"
)

func electionOptions() *Options {
	o := NewOptions()
	o.LeaderElectNamespace = "palisade-system"
	o.LeaderElectLeaseDuration = 1 * time.Second
	o.LeaderElectRenewDeadline = 500 * time.Millisecond
	o.LeaderElectRetryPeriod = 100 * time.Millisecond
	return o
}

// runElect runs elect in the background; the returned channel gets its
// result.
func runElect(ctx context.Context, o *Options, client *fake.Clientset, ready *metrics.Readiness, lead func(context.Context) error) chan error {
	done := make(chan error, 1)
	go func() { done <- elect(ctx, o, client, ready, lead) }()
	return done
}

// holder returns the Lease's holder ("" when released), or the error
// reading it.
func holder(client *fake.Clientset) string {
	lease, err := client.CoordinationV1().Leases("palisade-system").Get(context.Background(), LeaseName, metav1.GetOptions{})
	switch {
	case err != nil:
		return "error: " + err.Error()
	case lease.Spec.HolderIdentity == nil:
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func electResult(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("elect did not return within 10 s")
		return nil
	}
}

// TestElectLeadsAndReleases: the only candidate leads at once, is ready,
// and on shutdown finishes lead before it releases the Lease.
func TestElectLeadsAndReleases(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := fake.NewClientset()
	var ready metrics.Readiness
	leading := make(chan struct{})
	var heldDuringShutdown atomic.Value
	done := runElect(ctx, electionOptions(), client, &ready, func(ctx context.Context) error {
		close(leading)
		<-ctx.Done()
		heldDuringShutdown.Store(holder(client))
		return nil
	})
	select {
	case <-leading:
	case <-time.After(10 * time.Second):
		t.Fatal("the only candidate did not lead")
	}
	ready.SetSynced()
	ready.SetListening()
	if err := ready.Check(); err != nil {
		t.Errorf("leader not ready: %v", err)
	}
	cancel()
	if err := electResult(t, done); err != nil {
		t.Fatalf("elect after ctx done = %v, want nil", err)
	}
	if h, _ := heldDuringShutdown.Load().(string); h == "" || strings.HasPrefix(h, "error") {
		t.Errorf("while lead shut down, the Lease holder was %q, want this replica", h)
	}
	if h := holder(client); h != "" {
		t.Errorf("the Lease is still held by %q after shutdown", h)
	}
}

// TestElectStandby: while another replica holds the Lease, lead never runs
// and the replica is not ready; ctx done ends the wait without error.
func TestElectStandby(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	other, duration, now := "other", int32(3600), metav1.NewMicroTime(time.Now())
	client := fake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "palisade-system", Name: LeaseName},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &other, LeaseDurationSeconds: &duration, AcquireTime: &now, RenewTime: &now},
	})
	var ready metrics.Readiness
	var led atomic.Bool
	done := runElect(ctx, electionOptions(), client, &ready, func(context.Context) error { led.Store(true); return nil })
	time.Sleep(500 * time.Millisecond) // five retry periods
	if led.Load() {
		t.Fatal("a standby ran the leader's work")
	}
	if err := ready.Check(); err == nil {
		t.Error("a standby is ready")
	}
	cancel()
	if err := electResult(t, done); err != nil {
		t.Fatalf("standby's elect after ctx done = %v, want nil", err)
	}
	if h := holder(client); h != other {
		t.Errorf("holder %q, want %q", h, other)
	}
}

// TestElectLostLease: a leader that cannot renew stops its work and
// returns errLostLease, so that the process exits non-zero.
func TestElectLostLease(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset()
	var failUpdates atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failUpdates.Load() {
			return true, nil, errors.New("apiserver unreachable")
		}
		return false, nil, nil
	})
	var ready metrics.Readiness
	done := runElect(ctx, electionOptions(), client, &ready, func(ctx context.Context) error {
		failUpdates.Store(true)
		<-ctx.Done()
		return nil
	})
	if err := electResult(t, done); !errors.Is(err, errLostLease) {
		t.Fatalf("elect = %v, want errLostLease", err)
	}
}

// TestElectLeadFails: lead's error is elect's.
func TestElectLeadFails(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	boom := errors.New("cannot listen")
	done := runElect(ctx, electionOptions(), fake.NewClientset(), &metrics.Readiness{}, func(context.Context) error { return boom })
	if err := electResult(t, done); !errors.Is(err, boom) {
		t.Fatalf("elect = %v, want %v", err, boom)
	}
}

package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/metrics"
)

// errLostLease ends a leader that could not renew its Lease.
var errLostLease = errors.New("lost the leader Lease; exiting so that this replica restarts as a standby")

// elect waits until this replica holds the Lease LeaseName, then runs lead
// until ctx is done or the Lease is lost. It returns nil when ctx ends
// (first lead's work, then the Lease is released, so that a standby takes
// over at once), lead's error if lead fails, and errLostLease if the Lease
// could not be renewed.
func elect(ctx context.Context, o *Options, client kubernetes.Interface, ready *metrics.Readiness, lead func(context.Context) error) error {
	logger := klog.FromContext(ctx)
	id, err := identity()
	if err != nil {
		return err
	}
	leading := make(chan context.Context, 1)
	// The election outlives ctx while this replica leads, so that the Lease
	// is released only after lead has finished.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: o.LeaderElectNamespace, Name: LeaseName},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   o.LeaderElectLeaseDuration,
		RenewDeadline:   o.LeaderElectRenewDeadline,
		RetryPeriod:     o.LeaderElectRetryPeriod,
		ReleaseOnCancel: true,
		Name:            LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) { leading <- leaderCtx },
			OnStoppedLeading: func() {},
			OnNewLeader: func(holder string) {
				if holder != id {
					logger.Info("Standing by: another replica leads", "leader", holder)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	metrics.Leader.Set(0)
	logger.Info("Waiting for the leader Lease", "lease", o.LeaderElectNamespace+"/"+LeaseName, "identity", id)
	done := make(chan struct{})
	go func() {
		defer close(done)
		le.Run(electCtx)
	}()
	stopWaiting := context.AfterFunc(ctx, stopElection)

	select {
	case <-done: // ctx ended before this replica led
		return nil
	case leaderCtx := <-leading:
		stopWaiting()
		logger.Info("Became the leader", "lease", o.LeaderElectNamespace+"/"+LeaseName, "identity", id)
		metrics.Leader.Set(1)
		ready.SetLeader()
		runCtx, cancel := context.WithCancel(ctx)
		stopLost := context.AfterFunc(leaderCtx, cancel)
		err := lead(runCtx)
		stopLost()
		cancel()
		lost := leaderCtx.Err() != nil && ctx.Err() == nil
		stopElection() // releases the Lease, if still held
		<-done
		switch {
		case err != nil:
			return err
		case lost:
			return errLostLease
		}
		return nil
	}
}

// identity names this replica in the Lease: the host name (the pod's name
// in a cluster) and a random suffix, unique across restarts.
func identity() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("leader election identity: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix) // never fails
	return host + "_" + hex.EncodeToString(suffix), nil
}

package cniserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// PodExists reports whether the pod namespace/name still exists (on this
// node) in the cluster, from an informer's cache.
type PodExists func(namespace, name string) bool

// GarbageCollect detaches every attachment whose pod has been gone from the
// cluster for at least grace, as seen by exists on successive calls: pods
// deleted while no CNI DEL could run (the node's runtime was down, a DEL
// failed for good) would otherwise keep their IP, port and veth forever.
// The grace period covers the short window in which a runtime sets up a pod
// that the cache has not caught up with. It returns how many it detached.
func (s *Server) GarbageCollect(ctx context.Context, exists PodExists, grace time.Duration) (int, error) {
	if !s.Ready() {
		return 0, nil // Reconcile has not rebuilt the store yet
	}
	now := time.Now()
	var gone []string
	s.gcMu.Lock()
	seen := map[string]bool{}
	for _, p := range s.cfg.Store.List() {
		seen[p.ContainerID] = true
		if exists(p.PodNamespace, p.PodName) {
			delete(s.missingSince, p.ContainerID)
			continue
		}
		since, ok := s.missingSince[p.ContainerID]
		if !ok {
			if s.missingSince == nil {
				s.missingSince = map[string]time.Time{}
			}
			s.missingSince[p.ContainerID] = now
			continue
		}
		if now.Sub(since) >= grace {
			gone = append(gone, p.ContainerID)
		}
	}
	for id := range s.missingSince {
		if !seen[id] {
			delete(s.missingSince, id) // detached meanwhile
		}
	}
	s.gcMu.Unlock()

	logger := klog.FromContext(ctx)
	var errs []error
	detached := 0
	for _, id := range gone {
		if err := s.collect(ctx, id, exists); err != nil {
			errs = append(errs, err)
			continue
		}
		detached++
	}
	if detached > 0 {
		logger.Info("Garbage-collected attachments of deleted pods", "count", detached)
	}
	return detached, errors.Join(errs...)
}

// collect detaches one container under the request locks, unless its pod
// came back or it was detached meanwhile.
func (s *Server) collect(ctx context.Context, containerID string, exists PodExists) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	unlock := s.containers.lock(containerID)
	defer unlock()
	p, ok := s.cfg.Store.GetByContainerID(containerID)
	if !ok || exists(p.PodNamespace, p.PodName) {
		return nil
	}
	klog.FromContext(ctx).Info("Detaching the pod of a container whose pod is gone", "pod", klog.KRef(p.PodNamespace, p.PodName),
		"containerID", containerID, "ip", p.IP)
	if err := s.detach(ctx, containerID, p.IfName); err != nil {
		return fmt.Errorf("cniserver: garbage-collecting %s: %w", containerID, err)
	}
	s.gcMu.Lock()
	delete(s.missingSince, containerID)
	s.gcMu.Unlock()
	return nil
}

package networkpolicy

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/metrics"
)

// Controller keeps a State current from informers. Pod and Namespace event
// handlers update State's index at once and enqueue the names of the groups
// they affected; NetworkPolicy handlers enqueue the policy's key. One
// worker per queue syncs the keys, reading only current state, so that a
// key enqueued many times is synced once.
type Controller struct {
	state       *State
	publisher   Publisher
	policies    networkinglisters.NetworkPolicyLister
	synced      []cache.InformerSynced
	policyQueue workqueue.TypedRateLimitingInterface[string]
	groupQueue  workqueue.TypedRateLimitingInterface[string]
	// modelSynced is set once the initial model is published.
	modelSynced atomic.Bool
}

// NewController returns a controller over the given informers that
// publishes to publisher. It registers event handlers, so call it before
// the informer factory is started.
func NewController(
	podInformer coreinformers.PodInformer,
	namespaceInformer coreinformers.NamespaceInformer,
	policyInformer networkinginformers.NetworkPolicyInformer,
	publisher Publisher,
) (*Controller, error) {
	c := &Controller{
		state:     NewState(publisher),
		publisher: publisher,
		policies:  policyInformer.Lister(),
		policyQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "networkpolicy", MetricsProvider: metrics.WorkqueueProvider},
		),
		groupQueue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "group", MetricsProvider: metrics.WorkqueueProvider},
		),
	}
	handlers := map[string]struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		"pod": {podInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.onPod(obj, false) },
			UpdateFunc: func(_, obj any) { c.onPod(obj, false) },
			DeleteFunc: func(obj any) { c.onPod(obj, true) },
		}},
		"namespace": {namespaceInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.onNamespace(obj, false) },
			UpdateFunc: func(_, obj any) { c.onNamespace(obj, false) },
			DeleteFunc: func(obj any) { c.onNamespace(obj, true) },
		}},
		"networkpolicy": {policyInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueuePolicy,
			UpdateFunc: func(_, obj any) { c.enqueuePolicy(obj) },
			DeleteFunc: c.enqueuePolicy,
		}},
	}
	for name, h := range handlers {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return nil, fmt.Errorf("adding %s event handler: %w", name, err)
		}
		c.synced = append(c.synced, reg.HasSynced)
	}
	return c, nil
}

// HasSynced says whether the informers synced and the initial model is
// published.
func (c *Controller) HasSynced() bool { return c.modelSynced.Load() }

// State returns the controller's model.
func (c *Controller) State() *State { return c.state }

func (c *Controller) onPod(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = tomb.Obj, true
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if deleted {
		c.enqueueGroups(c.state.DeletePod(p.Namespace, p.Name))
	} else {
		c.enqueueGroups(c.state.UpsertPod(p))
	}
}

func (c *Controller) onNamespace(obj any, deleted bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = tomb.Obj, true
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return
	}
	if deleted {
		c.enqueueGroups(c.state.DeleteNamespace(ns.Name))
	} else {
		c.enqueueGroups(c.state.UpsertNamespace(ns))
	}
}

func (c *Controller) enqueueGroups(names []string) {
	for _, n := range names {
		c.groupQueue.Add(n)
	}
}

func (c *Controller) enqueuePolicy(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(fmt.Errorf("NetworkPolicy event without a key: %w", err))
		return
	}
	c.policyQueue.Add(key)
}

// Run waits for the informers' caches, builds the initial model (every
// policy, synchronously), tells the publisher the model is synced, and then
// syncs queued keys until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.policyQueue.ShutDown()
	defer c.groupQueue.ShutDown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting NetworkPolicy controller")
	defer logger.Info("Stopped NetworkPolicy controller")

	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return fmt.Errorf("NetworkPolicy controller: informer caches did not sync")
	}
	start := time.Now()
	nps, err := c.policies.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing NetworkPolicies: %w", err)
	}
	for _, np := range nps {
		key := np.Namespace + "/" + np.Name
		if err := c.state.SyncPolicy(key, np); err != nil {
			logger.Error(err, "Skipping invalid NetworkPolicy", "networkPolicy", key)
		}
	}
	c.publisher.SetSynced()
	c.modelSynced.Store(true)
	stats := c.state.Stats()
	logger.Info("Initial NetworkPolicy model ready", "policies", stats.Policies, "groups", stats.Groups,
		"pods", stats.Index.Pods, "labelSets", stats.Index.LabelSets, "duration", time.Since(start))

	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for c.processNextPolicy(ctx) {
		}
	}, time.Second)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for c.processNextGroup() {
		}
	}, time.Second)
	<-ctx.Done()
	return nil
}

func (c *Controller) processNextPolicy(ctx context.Context) bool {
	key, quit := c.policyQueue.Get()
	if quit {
		return false
	}
	defer c.policyQueue.Done(key)
	start := time.Now()
	err := c.syncPolicy(ctx, key)
	metrics.SyncDuration.WithLabelValues(metrics.SyncPolicy).Observe(time.Since(start).Seconds())
	if err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Syncing NetworkPolicy failed, will retry", "networkPolicy", key)
		c.policyQueue.AddRateLimited(key)
		return true
	}
	c.policyQueue.Forget(key)
	return true
}

// syncPolicy syncs one policy from the lister. Only a lister failure is
// returned (and retried); an invalid policy is logged.
func (c *Controller) syncPolicy(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	np, err := c.policies.NetworkPolicies(namespace).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		np = nil // deleted
	case err != nil:
		return fmt.Errorf("getting NetworkPolicy %s: %w", key, err)
	}
	if err := c.state.SyncPolicy(key, np); err != nil {
		klog.FromContext(ctx).Error(err, "Skipping invalid NetworkPolicy", "networkPolicy", key)
	}
	return nil
}

func (c *Controller) processNextGroup() bool {
	name, quit := c.groupQueue.Get()
	if quit {
		return false
	}
	defer c.groupQueue.Done(name)
	start := time.Now()
	c.state.SyncGroup(name)
	metrics.SyncDuration.WithLabelValues(metrics.SyncGroup).Observe(time.Since(start).Seconds())
	c.groupQueue.Forget(name)
	return true
}

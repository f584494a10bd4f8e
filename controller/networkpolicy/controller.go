package networkpolicy

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Publisher receives every newly computed model. The controller's watch store
// implements it.
type Publisher interface {
	Publish(m *Model)
}

// syncKey is the only queue item: every change triggers one full recompute.
// When groups become incremental, the queue will carry object keys instead;
// Publisher and Model stay.
const syncKey = "model"

// Controller recomputes the model whenever a Pod, Namespace or NetworkPolicy
// changes and publishes it.
type Controller struct {
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	policies   networkinglisters.NetworkPolicyLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	publisher  Publisher
}

// NewController returns a controller over the given informers. It registers
// event handlers, so call it before the informer factory is started.
func NewController(
	podInformer coreinformers.PodInformer,
	namespaceInformer coreinformers.NamespaceInformer,
	policyInformer networkinginformers.NetworkPolicyInformer,
	publisher Publisher,
) (*Controller, error) {
	c := &Controller{
		pods:       podInformer.Lister(),
		namespaces: namespaceInformer.Lister(),
		policies:   policyInformer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "networkpolicy"},
		),
		publisher: publisher,
	}
	enqueue := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(syncKey) },
		UpdateFunc: func(any, any) { c.queue.Add(syncKey) },
		DeleteFunc: func(any) { c.queue.Add(syncKey) },
	}
	for name, inf := range map[string]cache.SharedIndexInformer{
		"pod":           podInformer.Informer(),
		"namespace":     namespaceInformer.Informer(),
		"networkpolicy": policyInformer.Informer(),
	} {
		reg, err := inf.AddEventHandler(enqueue)
		if err != nil {
			return nil, fmt.Errorf("adding %s event handler: %w", name, err)
		}
		c.synced = append(c.synced, reg.HasSynced)
	}
	return c, nil
}

// Run waits for the informers' caches, publishes a first model and then
// recomputes on every change until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting NetworkPolicy controller")
	defer logger.Info("Stopped NetworkPolicy controller")

	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		return fmt.Errorf("NetworkPolicy controller: informer caches did not sync")
	}
	// The first model is published even if nothing happens after sync, so
	// watchers get their initial state.
	c.queue.Add(syncKey)
	go wait.UntilWithContext(ctx, c.runWorker, time.Second)
	<-ctx.Done()
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx); err != nil {
		utilruntime.HandleErrorWithContext(ctx, err, "Syncing NetworkPolicy model failed, will retry")
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync recomputes the whole model from the listers and publishes it.
func (c *Controller) sync(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	in, err := c.inputs()
	if err != nil {
		return err
	}
	m := Compute(in)
	for key, err := range m.Errors {
		logger.Error(err, "Skipping invalid NetworkPolicy", "networkPolicy", key)
	}
	c.publisher.Publish(m)
	logger.V(2).Info("Published NetworkPolicy model", "policies", len(m.Policies),
		"appliedToGroups", len(m.AppliedToGroups), "addressGroups", len(m.AddressGroups), "duration", time.Since(start))
	return nil
}

func (c *Controller) inputs() (Inputs, error) {
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return Inputs{}, fmt.Errorf("listing pods: %w", err)
	}
	namespaces, err := c.namespaces.List(labels.Everything())
	if err != nil {
		return Inputs{}, fmt.Errorf("listing namespaces: %w", err)
	}
	policies, err := c.policies.List(labels.Everything())
	if err != nil {
		return Inputs{}, fmt.Errorf("listing networkpolicies: %w", err)
	}
	return Inputs{Pods: pods, Namespaces: namespaces, NetworkPolicies: policies}, nil
}

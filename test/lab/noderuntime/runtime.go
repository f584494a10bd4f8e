// Package noderuntime stands in for the kubelet and container runtime on one
// lab node. It registers the Node and keeps it alive (Lease and Ready
// condition), and for every pod bound to the node: creates a network
// namespace, runs palisade-cni ADD exactly as a container runtime does,
// starts test servers on the pod's container ports inside that namespace,
// and reports the pod Running with its IP. On deletion it undoes all of it
// and removes the pod (there is no kubelet to confirm a graceful delete).
// Images and commands are ignored.
package noderuntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/underlay"
)

// Options configure one node's runtime.
type Options struct {
	// Node is the node name (node1..nodeN).
	Node string
	// Dir is the lab directory.
	Dir string
	// CNIBinDir holds palisade-cni (it is also CNI_PATH).
	CNIBinDir string
	// Workers is the number of pods set up concurrently.
	Workers int
}

// Run registers the node and serves its pods until ctx is cancelled. It
// leaves pods and their namespaces in place when it stops: a restarted
// runtime picks them up from pods.json.
func Run(ctx context.Context, o Options) error {
	idx, err := layout.NodeIndex(o.Node)
	if err != nil {
		return err
	}
	if o.Dir == "" || o.CNIBinDir == "" {
		return errors.New("noderuntime: Dir and CNIBinDir are required")
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	dir := layout.Dir(o.Dir)
	nodeDir := dir.Node(o.Node)
	if err := os.MkdirAll(string(nodeDir), 0o755); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", dir.Kubeconfig())
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "palisade-lab-runtime/" + o.Node
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	state, err := loadState(nodeDir.Pods())
	if err != nil {
		return err
	}
	r := &nodeRuntime{
		node:    o.Node,
		nodeIP:  layout.NodeIP(idx).String(),
		nodeDir: nodeDir,
		cniBin:  o.CNIBinDir,
		client:  client,
		state:   state,
		servers: map[string]*testServers{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 5*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
	}
	defer r.queue.ShutDown()
	defer r.stopAllServers()
	return r.run(ctx, o.Workers)
}

// nodeRuntime is one node's pod lifecycle loop.
type nodeRuntime struct {
	node, nodeIP string
	nodeDir      layout.NodeDir
	cniBin       string
	client       kubernetes.Interface
	pods         corelisters.PodLister
	state        *podState
	queue        workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	servers map[string]*testServers // by pod key
}

func (r *nodeRuntime) run(ctx context.Context, workers int) error {
	logger := klog.FromContext(ctx)
	var node *corev1.Node
	// The apiserver may still be starting: retry registration.
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		node, err = registerNode(ctx, r.client, r.node, r.nodeIP)
		if err != nil {
			logger.Info("Node registration failed; retrying", "err", err)
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("register node %s: %w", r.node, err)
	}
	logger.Info("Registered node", "node", r.node, "ip", r.nodeIP)
	go heartbeat(ctx, r.client, node, r.nodeIP)

	factory := informers.NewSharedInformerFactoryWithOptions(r.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.node).String()
		}))
	inf := factory.Core().V1().Pods()
	r.pods = inf.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			r.queue.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	// Pods recorded by an earlier run: resume or clean them up.
	for _, key := range r.state.keys() {
		r.queue.Add(key)
	}
	for range workers {
		go wait.UntilWithContext(ctx, r.worker, time.Second)
	}
	<-ctx.Done()
	return nil
}

func (r *nodeRuntime) worker(ctx context.Context) {
	for r.processNext(ctx) {
	}
}

func (r *nodeRuntime) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "pod", key)
	if err := r.sync(klog.NewContext(ctx, logger), key); err != nil {
		logger.Info("Pod sync failed; retrying", "attempt", r.queue.NumRequeues(key)+1, "err", err)
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// sync brings one pod's sandbox in line with the API: set up while the pod
// exists, torn down once it is gone, deleting or replaced by a new UID.
func (r *nodeRuntime) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		utilruntime.HandleError(err)
		return nil
	}
	pod, err := r.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		return err
	}
	rec, have := r.state.get(key)
	if have && (pod == nil || pod.DeletionTimestamp != nil || string(pod.UID) != rec.UID) {
		if err := r.teardown(ctx, rec); err != nil {
			return err
		}
	}
	switch {
	case pod == nil:
		return nil
	case pod.DeletionTimestamp != nil:
		return r.forceDelete(ctx, pod)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil
	case pod.Spec.HostNetwork:
		return r.reportRunning(ctx, pod, r.nodeIP)
	}
	return r.setup(ctx, pod)
}

func (r *nodeRuntime) setup(ctx context.Context, pod *corev1.Pod) error {
	logger := klog.FromContext(ctx)
	key := pod.Namespace + "/" + pod.Name
	rec, have := r.state.get(key)
	if !have {
		netnsName := layout.PodNetns(string(pod.UID))
		rec = PodRecord{
			Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Node: r.node,
			ContainerID: strings.ReplaceAll(string(pod.UID), "-", ""),
			NetnsName:   netnsName, Netns: layout.NetnsPath(netnsName),
		}
		// Record first, so that `down` and a restarted runtime know the
		// namespace even if the next steps fail.
		if err := r.state.put(rec); err != nil {
			return err
		}
		if err := underlay.DeleteNetns(ctx, netnsName); err != nil { // a leftover of a crash
			return err
		}
		if err := underlay.CreateNetns(ctx, netnsName); err != nil {
			return err
		}
		logger.V(2).Info("Created pod network namespace", "netns", rec.Netns)
	}
	if rec.IP == "" {
		out, err := invokeCNI(ctx, filepath.Join(r.cniBin, cniPluginName), r.cniCall("ADD", rec), netConf(r.nodeDir.CNISocket(), nil))
		if err != nil {
			return err
		}
		ip, err := parseAddResult(out)
		if err != nil {
			return err
		}
		rec.IP, rec.CNIResult = ip.String(), out
		if err := r.state.put(rec); err != nil {
			return err
		}
		logger.Info("Pod network ready", "ip", rec.IP, "netns", rec.Netns)
	}
	if err := r.ensureServers(ctx, pod, rec); err != nil {
		return err
	}
	return r.reportRunning(ctx, pod, rec.IP)
}

func (r *nodeRuntime) cniCall(command string, rec PodRecord) cniCall {
	return cniCall{
		Command: command, ContainerID: rec.ContainerID, Netns: rec.Netns,
		PodNS: rec.Namespace, PodName: rec.Name, Path: r.cniBin,
	}
}

func (r *nodeRuntime) ensureServers(ctx context.Context, pod *corev1.Pod, rec PodRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.servers[rec.Key()]; ok {
		return nil
	}
	ports, skipped := podPorts(pod)
	if len(skipped) > 0 {
		klog.FromContext(ctx).Info("Not serving ports the lab kernel cannot open", "ports", skipped)
	}
	s, err := startServers(rec.Netns, ports, rec.Key())
	if err != nil {
		return err
	}
	r.servers[rec.Key()] = s
	return nil
}

func (r *nodeRuntime) stopServers(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.servers[key]; ok {
		s.stop()
		delete(r.servers, key)
	}
}

func (r *nodeRuntime) stopAllServers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, s := range r.servers {
		s.stop()
		delete(r.servers, key)
	}
}

// teardown stops the pod's servers, runs CNI DEL, and deletes its network
// namespace and record. CNI DEL is retried a few times; if it keeps failing
// (e.g. no agent) the namespace is removed anyway.
func (r *nodeRuntime) teardown(ctx context.Context, rec PodRecord) error {
	logger := klog.FromContext(ctx)
	r.stopServers(rec.Key())
	conf := netConf(r.nodeDir.CNISocket(), rec.CNIResult)
	plugin := filepath.Join(r.cniBin, cniPluginName)
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			time.Sleep(time.Second)
		}
		if _, err = invokeCNI(ctx, plugin, r.cniCall("DEL", rec), conf); err == nil {
			break
		}
	}
	if err != nil {
		logger.Error(err, "CNI DEL failed; removing the pod's namespace anyway")
	}
	if err := underlay.DeleteNetns(ctx, rec.NetnsName); err != nil {
		return err
	}
	logger.Info("Pod torn down", "netns", rec.Netns)
	return r.state.remove(rec.Key())
}

// forceDelete completes a graceful deletion, as a kubelet would once the
// containers stopped.
func (r *nodeRuntime) forceDelete(ctx context.Context, pod *corev1.Pod) error {
	err := r.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// reportRunning sets the status a kubelet reports for a running, ready pod.
func (r *nodeRuntime) reportRunning(ctx context.Context, pod *corev1.Pod, ip string) error {
	if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP == ip && isReady(pod) {
		return nil
	}
	pod = pod.DeepCopy()
	setRunningStatus(pod, ip, r.nodeIP, time.Now())
	_, err := r.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func isReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// setRunningStatus fills pod.Status for a pod whose containers all run.
func setRunningStatus(pod *corev1.Pod, podIP, hostIP string, now time.Time) {
	t := metav1.NewTime(now)
	st := &pod.Status
	st.Phase = corev1.PodRunning
	st.PodIP = podIP
	st.PodIPs = []corev1.PodIP{{IP: podIP}}
	st.HostIP = hostIP
	st.HostIPs = []corev1.HostIP{{IP: hostIP}}
	if st.StartTime == nil {
		st.StartTime = &t
	}
	for _, ct := range []corev1.PodConditionType{
		corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled,
	} {
		setPodCondition(st, corev1.PodCondition{Type: ct, Status: corev1.ConditionTrue, LastTransitionTime: t})
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: containerIDScheme + strings.ReplaceAll(string(pod.UID), "-", "") + "-" + c.Name,
			Ready:       true,
			Started:     ptr.To(true),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}},
		})
	}
}

func setPodCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			if st.Conditions[i].Status == c.Status {
				return
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// Package lab runs a one-machine Kubernetes cluster for Palisade's
// end-to-end tests and demos: a real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler) in the host network namespace,
// and N nodes, each a network namespace on the underlay bridge with its own
// Open vSwitch, palisade-agent and a node runtime standing in for the
// kubelet (package noderuntime). Every process is detached and recorded in
// a pid file, so Down works from another process and after a crash.
//
// Up and Down are what `palisade-lab up|down` run; end-to-end tests call
// them directly. Pods lists the lab's pods for package probe.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/noderuntime"
	"palisade.dev/palisade/test/lab/probe"
	"palisade.dev/palisade/test/lab/proc"
	"palisade.dev/palisade/test/lab/underlay"
	"palisade.dev/palisade/test/ovsinstance"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// Lab is a running lab.
type Lab struct {
	opts   Options
	dir    layout.Dir
	config *rest.Config
	client kubernetes.Interface
	// procs are the processes started so far (watched while waiting).
	procs []*proc.Process
	prog  *progress
}

// labConfig is recorded in DIR/lab.json for later commands (env, probe).
type labConfig struct {
	Nodes      int    `json:"nodes"`
	K8sBinDir  string `json:"k8sBinDir"`
	BinDir     string `json:"binDir"`
	NoPalisade bool   `json:"noPalisade"`
	APIServer  string `json:"apiServer"`
}

// Up starts a lab and returns once the apiserver is ready, every node is
// registered, Ready and has a pod CIDR, and (unless NoPalisade) the
// controller runs and every agent serves its CNI socket. On failure the
// partial lab is torn down unless o.KeepOnFailure.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	l := &Lab{opts: o, dir: layout.Dir(o.Dir), prog: newProgress(o.Progress)}
	if err := l.prepare(ctx); err != nil {
		return nil, err
	}
	if err := l.up(ctx); err != nil {
		if o.KeepOnFailure {
			l.prog.step("up failed; the lab is left in %s for inspection (palisade-lab down removes it)", o.Dir)
			return nil, err
		}
		l.prog.step("up failed; tearing down (--keep-on-failure keeps the lab and its logs)")
		if derr := Down(context.WithoutCancel(ctx), o.Dir, o.Progress); derr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", derr))
		}
		return nil, err
	}
	return l, nil
}

// prepare refuses to start over a running lab, removes a crashed lab's
// leftovers in the same directory, and creates the directory.
func (l *Lab) prepare(ctx context.Context) error {
	dir := string(l.dir)
	running, err := runningProcesses(l.dir)
	if err != nil {
		return err
	}
	if len(running) > 0 {
		return fmt.Errorf("lab already running in %s; run palisade-lab down first", dir)
	}
	if _, err := os.Stat(l.dir.Marker()); err == nil {
		l.prog.step("removing the leftovers of a previous lab in %s", dir)
		if err := Down(ctx, dir, io.Discard); err != nil {
			return err
		}
	} else if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s exists, is not empty and is not a palisade-lab directory; choose another --dir", dir)
	}
	left, err := underlay.Leftovers()
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("another lab's network exists (%s): run palisade-lab down with that lab's --dir (down also cleans up after a crash)", strings.Join(left, ", "))
	}
	for _, d := range []string{dir, l.dir.Logs(), l.dir.Pids(), l.dir.Nodes(), l.dir.PKI()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(l.dir.Marker(), []byte("palisade-lab\n"), 0o644)
}

func (l *Lab) up(ctx context.Context) error {
	o := l.opts
	if err := underlay.Create(ctx, o.Nodes); err != nil {
		return err
	}
	l.prog.step("underlay: bridge %s with %s/%d, %d node namespace(s)", layout.Bridge, layout.HostIP, layout.UnderlayPrefixLen, o.Nodes)

	ports, err := pickPorts(o.APIServerPort)
	if err != nil {
		return err
	}
	keys, err := newPKI(l.dir.PKI())
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", layout.HostIP, ports.APIServer)
	if err := l.writeConfig(server); err != nil {
		return err
	}

	etcd, err := l.start(ctx, "etcd", tierEtcd, filepath.Join(o.K8sBinDir, "etcd"), etcdArgs(l.dir.Etcd(), ports), l.logFile("etcd"))
	if err != nil {
		return err
	}
	health := fmt.Sprintf("http://127.0.0.1:%d/health", ports.EtcdClient)
	if err := l.waitFor(ctx, "etcd", 30*time.Second, func(ctx context.Context) (bool, error) {
		return etcdHealthy(ctx, health), nil
	}); err != nil {
		return err
	}
	l.prog.step("etcd ready on 127.0.0.1:%d (pid %d)", ports.EtcdClient, etcd.Pid)

	apiserver, err := l.start(ctx, "kube-apiserver", tierAPIServer, filepath.Join(o.K8sBinDir, "kube-apiserver"), apiserverArgs(keys, ports), l.logFile("kube-apiserver"))
	if err != nil {
		return err
	}
	if err := l.waitFor(ctx, "kube-apiserver serving certificate", 60*time.Second, func(context.Context) (bool, error) {
		_, err := os.Stat(keys.ServingCert)
		return err == nil, nil
	}); err != nil {
		return err
	}
	if err := l.connect(server, keys); err != nil {
		return err
	}
	if err := l.waitFor(ctx, "kube-apiserver /readyz", 120*time.Second, func(ctx context.Context) (bool, error) {
		_, err := l.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil, nil
	}); err != nil {
		return err
	}
	l.prog.step("kube-apiserver ready at %s (pid %d)", server, apiserver.Pid)
	if !o.NoPalisade {
		if err := l.installReadAPI(ctx); err != nil {
			return err
		}
		if err := l.installRBAC(ctx); err != nil {
			return err
		}
	}

	kubeconfig := l.dir.Kubeconfig()
	if _, err := l.start(ctx, "kube-controller-manager", tierControllers, filepath.Join(o.K8sBinDir, "kube-controller-manager"), kcmArgs(kubeconfig, keys, ports), l.logFile("kube-controller-manager")); err != nil {
		return err
	}
	if _, err := l.start(ctx, "kube-scheduler", tierControllers, filepath.Join(o.K8sBinDir, "kube-scheduler"), schedulerArgs(kubeconfig, ports), l.logFile("kube-scheduler")); err != nil {
		return err
	}
	if o.NoPalisade {
		l.prog.step("started kube-controller-manager, kube-scheduler (no palisade-controller: --no-palisade)")
	} else {
		if err := writeConf(string(l.dir), o.ConfDir); err != nil {
			return err
		}
		// The shipped configuration, then the lab's own values.
		args := append([]string{"--config", ConfFile(string(l.dir), controllerConf)}, controllerArgs(filepath.Join(string(l.dir), controllerKubeconfig))...)
		if _, err := l.start(ctx, controllerBinary, tierControllers, filepath.Join(o.BinDir, controllerBinary), args, l.logFile(controllerBinary)); err != nil {
			return err
		}
		l.prog.step("started kube-controller-manager, kube-scheduler, palisade-controller")
	}

	for i := 1; i <= o.Nodes; i++ {
		if err := l.startNode(ctx, i); err != nil {
			return fmt.Errorf("%s: %w", layout.NodeName(i), err)
		}
	}
	if o.NoPalisade {
		l.prog.step("started %d node runtime(s) (no OVS or palisade-agent: --no-palisade)", o.Nodes)
	} else {
		l.prog.step("started %d node(s): runtime, OVS, palisade-agent", o.Nodes)
	}

	if err := l.waitFor(ctx, "nodes Ready, untainted, with a pod CIDR", 120*time.Second, l.nodesReady); err != nil {
		return err
	}
	l.prog.step("nodes Ready with pod CIDRs")
	if !o.NoPalisade {
		if err := l.waitFor(ctx, "palisade-agent CNI sockets", 120*time.Second, l.agentsReady); err != nil {
			return err
		}
		l.prog.step("palisade-agents serve their CNI sockets")
	}
	l.prog.step("lab up: %d node(s) in %s; KUBECONFIG=%s", o.Nodes, o.Dir, kubeconfig)
	return nil
}

func (l *Lab) writeConfig(server string) error {
	data, err := json.MarshalIndent(labConfig{
		Nodes: l.opts.Nodes, K8sBinDir: l.opts.K8sBinDir, BinDir: l.opts.BinDir,
		NoPalisade: l.opts.NoPalisade, APIServer: server,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(l.dir.Config(), data, 0o644)
}

// connect writes the admin kubeconfig (trusting the apiserver's
// self-signed bundle) and makes the lab's client from it.
func (l *Lab) connect(server string, keys *pki) error {
	ca, err := os.ReadFile(keys.ServingCert)
	if err != nil {
		return err
	}
	if err := writeKubeconfig(l.dir.Kubeconfig(), server, ca, keys.AdminToken); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.dir.Kubeconfig())
	if err != nil {
		return err
	}
	cfg.Timeout = 10 * time.Second
	cfg.QPS, cfg.Burst = 50, 100
	l.config = cfg
	l.client, err = kubernetes.NewForConfig(cfg)
	return err
}

// startNode starts node i's runtime, and unless NoPalisade its OVS and
// agent (both inside the node's namespace).
func (l *Lab) startNode(ctx context.Context, i int) error {
	name := layout.NodeName(i)
	nd := l.dir.Node(name)
	for _, d := range []string{nd.Logs(), nd.Agent(), nd.OVS()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := l.start(ctx, name+"-runtime", tierNodes, l.opts.LabBinary, runtimeArgs(string(l.dir), i, l.opts.BinDir), filepath.Join(nd.Logs(), "runtime.log")); err != nil {
		return err
	}
	if l.opts.NoPalisade {
		return nil
	}
	inst, err := ovsinstance.Start(ctx, ovsinstance.Options{Dir: nd.OVS(), Netns: layout.NodeNetns(i)})
	if err != nil {
		return err
	}
	if err := underlay.MoveToOVS(ctx, i, inst.Vsctl); err != nil {
		return err
	}
	if err := l.writeAgentToken(ctx, i, nd); err != nil {
		return err
	}
	args := agentArgs(filepath.Join(l.opts.BinDir, agentBinary), ConfFile(string(l.dir), agentConf), filepath.Join(string(l.dir), agentKubeconfig), i, nd, inst.DBSock, inst.MgmtSock, inst.Bridge)
	_, err = l.start(ctx, name+"-agent", tierNodes, "ip", args, filepath.Join(nd.Logs(), "agent.log"))
	return err
}

// logFile is the log of a control plane process.
func (l *Lab) logFile(name string) string { return filepath.Join(l.dir.Logs(), name+".log") }

// start starts a detached process and records it.
func (l *Lab) start(ctx context.Context, name string, tier int, path string, args []string, logFile string) (*proc.Process, error) {
	p, err := proc.Start(proc.Spec{Name: name, Tier: tier, Path: path, Args: args, LogFile: logFile}, l.dir.Pids())
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	klog.FromContext(ctx).V(2).Info("Started process", "name", name, "pid", p.Pid, "log", p.LogFile)
	return p, nil
}

// waitFor polls cond until it holds, ctx ends, timeout passes, or one of
// the lab's processes dies (then the error shows the end of its log).
func (l *Lab) waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range l.procs {
			if !p.Alive() {
				return fmt.Errorf("waiting for %s: %s exited; last lines of %s:\n%s", what, p.Name, p.LogFile, proc.Tail(p.LogFile, 15))
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (logs in %s)", what, ctx.Err(), l.dir.Logs())
		case <-tick.C:
		}
	}
}

func etcdHealthy(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&h) == nil && h.Health == "true"
}

func (l *Lab) nodesReady(ctx context.Context) (bool, error) {
	nodes, err := l.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil // the apiserver may be briefly busy
	}
	ready := 0
	for _, n := range nodes.Items {
		// kcm's node lifecycle controller may taint a node briefly
		// (not-ready) while it first observes it.
		if n.Spec.PodCIDR == "" || slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool {
			return strings.HasPrefix(t.Key, "node.kubernetes.io/")
		}) {
			continue
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	return ready == l.opts.Nodes, nil
}

func (l *Lab) agentsReady(context.Context) (bool, error) {
	for i := 1; i <= l.opts.Nodes; i++ {
		if _, err := os.Stat(l.dir.Node(layout.NodeName(i)).CNISocket()); err != nil {
			return false, nil
		}
	}
	return true, nil
}

// Dir is the lab directory.
func (l *Lab) Dir() string { return string(l.dir) }

// Kubeconfig is the path of the admin kubeconfig.
func (l *Lab) Kubeconfig() string { return l.dir.Kubeconfig() }

// RESTConfig returns a copy of the admin client configuration.
func (l *Lab) RESTConfig() *rest.Config { return rest.CopyConfig(l.config) }

// Client is an admin clientset.
func (l *Lab) Client() kubernetes.Interface { return l.client }

// Nodes is the node count.
func (l *Lab) Nodes() int { return l.opts.Nodes }

// Pods lists the lab's pods; see Pods.
func (l *Lab) Pods() ([]probe.Pod, error) { return Pods(string(l.dir)) }

// Down tears the lab down; see Down.
func (l *Lab) Down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return Down(ctx, string(l.dir), l.opts.Progress)
}

// Down stops every process of the lab in dir (node processes first,
// kube-apiserver before etcd), stops the nodes' OVS, deletes every lab
// network namespace (nodes and pods), the node veths and the bridge, and
// removes dir. It works from whatever exists: it is idempotent and cleans
// up after a crash. dir is only removed if it is a lab directory.
func Down(ctx context.Context, dir string, progressOut io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if progressOut == nil {
		progressOut = io.Discard
	}
	prog := newProgress(progressOut)
	d := layout.Dir(dir)
	var errs []error
	procs, err := proc.Read(d.Pids())
	if err != nil {
		errs = append(errs, err)
	}
	if err := proc.StopAll(ctx, procs, stopGrace); err != nil {
		errs = append(errs, err)
	}
	nodes, _ := os.ReadDir(d.Nodes())
	ovs := 0
	for _, n := range nodes {
		inst := &ovsinstance.Instance{Dir: d.Node(n.Name()).OVS()}
		if pids, _ := filepath.Glob(filepath.Join(inst.Dir, "*.pid")); len(pids) == 0 {
			continue
		}
		ovs++
		if err := inst.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	prog.step("stopped %d process(es) and %d node OVS instance(s)", len(procs), ovs)
	left, err := underlay.Leftovers()
	if err != nil {
		errs = append(errs, err)
	}
	if err := underlay.Destroy(ctx); err != nil {
		errs = append(errs, err)
	}
	prog.step("deleted %d network namespace(s) and link(s)", len(left))
	switch _, err := os.Stat(d.Marker()); {
	case err == nil:
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		} else {
			prog.step("removed %s", dir)
		}
	case errors.Is(err, os.ErrNotExist):
		if _, err := os.Stat(dir); err == nil {
			errs = append(errs, fmt.Errorf("not removing %s: it is not a palisade-lab directory", dir))
		}
	default:
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// runningProcesses returns the recorded processes of the lab in d that are
// still alive.
func runningProcesses(d layout.Dir) ([]*proc.Process, error) {
	procs, err := proc.Read(d.Pids())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(procs, func(p *proc.Process) bool { return !p.Alive() }), nil
}

// Pods lists the pods the node runtimes of the lab in dir have set up,
// sorted by namespace/name. Pods whose CNI ADD has not succeeded yet have
// no IP.
func Pods(dir string) ([]probe.Pod, error) {
	files, err := filepath.Glob(filepath.Join(layout.Dir(dir).Nodes(), "*", filepath.Base(layout.NodeDir("").Pods())))
	if err != nil {
		return nil, err
	}
	var pods []probe.Pod
	for _, f := range files {
		recs, err := noderuntime.ReadPods(f)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			pods = append(pods, probe.Pod{Namespace: r.Namespace, Name: r.Name, Node: r.Node, IP: r.IP, Netns: r.Netns})
		}
	}
	slices.SortFunc(pods, func(a, b probe.Pod) int { return strings.Compare(a.Key(), b.Key()) })
	return pods, nil
}

// Env returns shell lines that point kubectl at the lab in dir. The
// Kubernetes binaries are those the lab was started with (k8sBinDir if the
// lab records none).
func Env(dir, k8sBinDir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	d := layout.Dir(dir)
	if data, err := os.ReadFile(d.Config()); err == nil {
		var c labConfig
		if err := json.Unmarshal(data, &c); err != nil {
			return "", fmt.Errorf("parse %s: %w", d.Config(), err)
		}
		k8sBinDir = c.K8sBinDir
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", d.Kubeconfig(), k8sBinDir), nil
}

// progress prints numbered steps with the time since the start.
type progress struct {
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) step(format string, args ...any) {
	fmt.Fprintf(p.w, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// Package cli is the palisade-lab command line: a small dispatcher over
// the subcommands up, down, env, pods, probe and the internal runtime.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/noderuntime"
	"palisade.dev/palisade/test/lab/probe"
)

const usage = `palisade-lab runs a one-machine Kubernetes cluster with real OVS per node (root only).

Usage:
  palisade-lab up [--nodes N] [--dir DIR]     start a lab and wait until it is ready
  palisade-lab down [--dir DIR]               stop and remove a lab (also after a crash)
  palisade-lab env [--dir DIR]                print shell exports for kubectl
  palisade-lab pods [-o table|json]           list the lab's pods with IPs and netns
  palisade-lab probe [flags]                  reachability matrix between pods

DIR defaults to $PALISADE_LAB_DIR or /tmp/palisade-lab.
Run "palisade-lab <command> --help" for a command's flags.
`

// command is one subcommand: flags are registered on fs, run executes.
type command struct {
	name   string
	hidden bool
	setup  func(fs *pflag.FlagSet) func(ctx context.Context, io streams) error
}

type streams struct {
	out, err io.Writer
}

var commands = []command{
	{name: "up", setup: upCommand},
	{name: "down", setup: downCommand},
	{name: "env", setup: envCommand},
	{name: "pods", setup: podsCommand},
	{name: "probe", setup: probeCommand},
	{name: "runtime", hidden: true, setup: runtimeCommand},
}

// Run executes args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == args[0] })
	if i < 0 {
		fmt.Fprintf(stderr, "palisade-lab: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	cmd := commands[i]
	fs := pflag.NewFlagSet("palisade-lab "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { // --help, on stdout
		fmt.Fprintf(stdout, "Usage: palisade-lab %s [flags]\n\nFlags:\n%s", cmd.name, fs.FlagUsages())
	}
	addKlogFlags(fs)
	run := cmd.setup(fs)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "palisade-lab %s: %v\n", cmd.name, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "palisade-lab %s: unexpected arguments %q\n", cmd.name, fs.Args())
		return 2
	}
	ctx = klog.NewContext(ctx, klog.Background())
	if err := run(ctx, streams{out: stdout, err: stderr}); err != nil {
		fmt.Fprintf(stderr, "palisade-lab %s: %v\n", cmd.name, err)
		return 1
	}
	return 0
}

// addKlogFlags exposes klog's verbosity as -v.
func addKlogFlags(fs *pflag.FlagSet) {
	gfs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(gfs)
	fs.AddGoFlag(gfs.Lookup("v"))
}

func dirFlag(fs *pflag.FlagSet) *string {
	return fs.String("dir", lab.DefaultDir(), "lab directory ($PALISADE_LAB_DIR)")
}

func upCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	o := lab.Options{}
	fs.StringVar(&o.Dir, "dir", lab.DefaultDir(), "lab directory ($PALISADE_LAB_DIR)")
	fs.IntVar(&o.Nodes, "nodes", 1, "number of nodes")
	fs.StringVar(&o.K8sBinDir, "k8s-bin-dir", lab.DefaultK8sBinDir(), "directory of etcd and the Kubernetes binaries ($PALISADE_K8S_BIN)")
	fs.StringVar(&o.BinDir, "bin-dir", lab.DefaultBinDir(), "directory of the palisade binaries ($PALISADE_BIN_DIR)")
	fs.StringVar(&o.ConfDir, "conf-dir", "", "directory of palisade-agent.conf and palisade-controller.conf (default: the shipped build/yamls/conf, built into palisade-lab)")
	fs.IntVar(&o.APIServerPort, "apiserver-port", 0, "kube-apiserver port (0: 6443 if free, else any free port)")
	fs.BoolVar(&o.KeepOnFailure, "keep-on-failure", false, "leave a lab that failed to come up in place for inspection")
	fs.BoolVar(&o.NoPalisade, "no-palisade", false, "debug: run without palisade-controller, palisade-agent and OVS")
	_ = fs.MarkHidden("no-palisade")
	return func(ctx context.Context, s streams) error {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		o.LabBinary = self
		o.Progress = s.err
		l, err := lab.Up(ctx, o)
		if err != nil {
			return err
		}
		env, err := lab.Env(l.Dir(), o.K8sBinDir)
		if err != nil {
			return err
		}
		fmt.Fprint(s.out, env)
		return nil
	}
}

func downCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	dir := dirFlag(fs)
	return func(ctx context.Context, s streams) error {
		return lab.Down(ctx, *dir, s.err)
	}
}

func envCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	dir := dirFlag(fs)
	k8sBin := fs.String("k8s-bin-dir", lab.DefaultK8sBinDir(), "Kubernetes binaries, if the lab does not record them")
	return func(_ context.Context, s streams) error {
		env, err := lab.Env(*dir, *k8sBin)
		if err != nil {
			return err
		}
		fmt.Fprint(s.out, env)
		return nil
	}
}

func outputFlag(fs *pflag.FlagSet) *string {
	return fs.StringP("output", "o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("invalid output format %q: want table or json", o)
	}
	return nil
}

func podsCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	dir := dirFlag(fs)
	output := outputFlag(fs)
	return func(_ context.Context, s streams) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		pods, err := lab.Pods(*dir)
		if err != nil {
			return err
		}
		if *output == "json" {
			if pods == nil {
				pods = []probe.Pod{}
			}
			return writeJSON(s.out, pods)
		}
		w := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "NAMESPACE\tNAME\tNODE\tIP\tNETNS")
		for _, p := range pods {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Node, orNone(p.IP), p.Netns)
		}
		return w.Flush()
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func probeCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	dir := dirFlag(fs)
	namespaces := fs.StringSlice("namespaces", nil, "only pods in these namespaces")
	podNames := fs.StringSlice("pods", nil, "only these pods (name or namespace/name)")
	port := fs.Int("port", 80, "destination port")
	protocol := fs.String("protocol", probe.TCP, "TCP or UDP")
	timeout := fs.Duration("timeout", time.Second, "per-connection timeout")
	output := outputFlag(fs)
	return func(ctx context.Context, s streams) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		all, err := lab.Pods(*dir)
		if err != nil {
			return err
		}
		pods, skipped := selectPods(all, *namespaces, *podNames)
		for _, p := range skipped {
			fmt.Fprintf(s.err, "skipping %s: no IP yet (CNI ADD has not succeeded)\n", p.Key())
		}
		if len(pods) == 0 {
			return errors.New("no pods with an IP match the selection (see palisade-lab pods)")
		}
		res, err := probe.Matrix(ctx, pods, *port, *protocol, *timeout)
		if err != nil {
			return err
		}
		if *output == "json" {
			return writeJSON(s.out, res)
		}
		fmt.Fprint(s.out, res.Table())
		return nil
	}
}

// selectPods filters pods by namespace and name ("name" or "ns/name"; empty
// filters select all) and splits off the pods that have no IP yet.
func selectPods(all []probe.Pod, namespaces, names []string) (selected, noIP []probe.Pod) {
	for _, p := range all {
		if len(namespaces) > 0 && !slices.Contains(namespaces, p.Namespace) {
			continue
		}
		if len(names) > 0 && !slices.ContainsFunc(names, func(n string) bool {
			return n == p.Name || n == p.Key()
		}) {
			continue
		}
		if p.IP == "" {
			noIP = append(noIP, p)
			continue
		}
		selected = append(selected, p)
	}
	return selected, noIP
}

func runtimeCommand(fs *pflag.FlagSet) func(context.Context, streams) error {
	o := noderuntime.Options{}
	fs.StringVar(&o.Node, "node", "", "node name (node1..nodeN)")
	fs.StringVar(&o.Dir, "dir", lab.DefaultDir(), "lab directory")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", lab.DefaultBinDir(), "directory of palisade-cni (CNI_PATH)")
	return func(ctx context.Context, _ streams) error {
		if strings.TrimSpace(o.Node) == "" {
			return errors.New("--node is required")
		}
		return noderuntime.Run(ctx, o)
	}
}

package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/ovsinstance"
)

// Defaults, overridable by environment variables.
const (
	defaultDir       = "/tmp/palisade-lab"
	defaultK8sBinDir = "/var/cache/palisade/k8s-v1.37.1/bin"
	defaultBinDir    = "./bin"
	envDir           = "PALISADE_LAB_DIR"
	envK8sBin        = "PALISADE_K8S_BIN"
	envBinDir        = "PALISADE_BIN_DIR"
)

// Binary names.
const (
	labBinary        = "palisade-lab"
	controllerBinary = "palisade-controller"
	agentBinary      = "palisade-agent"
	cniBinary        = "palisade-cni"
)

// k8sBinaries are the Kubernetes programs `up` runs (kubectl is for users).
var k8sBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// DefaultDir is the lab directory: $PALISADE_LAB_DIR or /tmp/palisade-lab.
func DefaultDir() string { return envOr(envDir, defaultDir) }

// DefaultK8sBinDir holds the Kubernetes binaries: $PALISADE_K8S_BIN or the
// cache filled by hack/bootstrap.sh.
func DefaultK8sBinDir() string { return envOr(envK8sBin, defaultK8sBinDir) }

// DefaultBinDir holds Palisade's binaries: $PALISADE_BIN_DIR or ./bin.
func DefaultBinDir() string { return envOr(envBinDir, defaultBinDir) }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Options configure Up.
type Options struct {
	// Dir holds everything of the lab (DefaultDir when empty). It must not
	// exist, be empty, or be a lab directory.
	Dir string
	// Nodes is the node count (1 when zero).
	Nodes int
	// K8sBinDir holds etcd and the Kubernetes binaries (DefaultK8sBinDir).
	K8sBinDir string
	// BinDir holds palisade-controller, palisade-agent and palisade-cni
	// (DefaultBinDir).
	BinDir string
	// ConfDir holds palisade-agent.conf and palisade-controller.conf, the
	// components' configuration files (--config). Empty means the shipped
	// ones (build/yamls/conf, embedded in the program at build time). Up
	// copies them to DIR/conf (ConfFile).
	ConfDir string
	// LabBinary is the palisade-lab program, which runs each node's
	// runtime (BinDir/palisade-lab when empty; the CLI passes itself).
	LabBinary string
	// NoPalisade starts the cluster without palisade-controller and
	// palisade-agent and without OVS (for debugging the lab itself). Pods
	// then stay Pending in CNI ADD retries.
	NoPalisade bool
	// APIServerPort is kube-apiserver's port on layout.HostIP; 0 picks 6443
	// if free, else any free port.
	APIServerPort int
	// Progress receives one line per step with timings (nil: discarded).
	Progress io.Writer
	// KeepOnFailure leaves a failed lab in place for inspection instead of
	// tearing it down.
	KeepOnFailure bool
}

// complete fills defaults and makes paths absolute.
func (o *Options) complete() error {
	if o.Dir == "" {
		o.Dir = DefaultDir()
	}
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.K8sBinDir == "" {
		o.K8sBinDir = DefaultK8sBinDir()
	}
	if o.BinDir == "" {
		o.BinDir = DefaultBinDir()
	}
	if o.LabBinary == "" {
		o.LabBinary = filepath.Join(o.BinDir, labBinary)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	for _, p := range []*string{&o.Dir, &o.K8sBinDir, &o.BinDir, &o.LabBinary, &o.ConfDir} {
		if *p == "" {
			continue // ConfDir: the embedded files
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// validate checks what can be checked before touching the machine.
func (o *Options) validate() error {
	if os.Geteuid() != 0 {
		return errors.New("palisade-lab must run as root (it creates network namespaces)")
	}
	if err := layout.ValidateNodeCount(o.Nodes); err != nil {
		return err
	}
	if o.APIServerPort < 0 || o.APIServerPort > 65535 {
		return fmt.Errorf("invalid apiserver port %d", o.APIServerPort)
	}
	// OVS's sockets live in the node directories; unix socket paths are
	// limited to about 100 bytes.
	longest := filepath.Join(layout.Dir(o.Dir).Node(layout.NodeName(o.Nodes)).OVS(), ovsinstance.DefaultBridge+".mgmt")
	if len(longest) > 100 {
		return fmt.Errorf("lab directory %q is too long: socket path %s would exceed 100 bytes", o.Dir, longest)
	}
	var errs []error
	for _, b := range k8sBinaries {
		errs = append(errs, executable(filepath.Join(o.K8sBinDir, b), "run hack/bootstrap.sh to build the Kubernetes binaries, or pass --k8s-bin-dir"))
	}
	errs = append(errs, executable(o.LabBinary, "build it with make build (go build -o bin/ ./cmd/palisade-lab)"))
	if !o.NoPalisade {
		for _, b := range []string{controllerBinary, agentBinary, cniBinary} {
			errs = append(errs, executable(filepath.Join(o.BinDir, b), "run make build, or pass --bin-dir"))
		}
		if o.ConfDir != "" {
			for _, f := range []string{agentConf, controllerConf} {
				if _, err := os.Stat(filepath.Join(o.ConfDir, f)); err != nil {
					errs = append(errs, fmt.Errorf("configuration directory %s: %w", o.ConfDir, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

func executable(path, hint string) error {
	st, err := os.Stat(path)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("missing executable %s: %s", path, hint)
	}
	return nil
}

package lab

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"palisade.dev/palisade/build/yamls"
)

// Configuration files of the components, as build/yamls/conf ships them
// (the palisade-config ConfigMap). The lab starts each component with
// --config pointing at its file and puts on the command line only what
// differs in the lab (addresses, sockets, directories, the userspace
// datapath), so every other key of the shipped file is in force.
const (
	agentConf      = "palisade-agent.conf"
	controllerConf = "palisade-controller.conf"
)

// confDir is the directory of the configuration files in the lab directory.
func confDir(labDir string) string { return filepath.Join(labDir, "conf") }

// ConfFile is the path of a configuration file (palisade-agent.conf or
// palisade-controller.conf) the lab in labDir runs its components with.
func ConfFile(labDir, name string) string { return filepath.Join(confDir(labDir), name) }

// writeConf copies the configuration files into the lab directory: from
// src when set, else the shipped ones embedded in the program (package
// yamls).
func writeConf(labDir, src string) error {
	files := fs.FS(yamls.Conf)
	prefix := "conf"
	if src != "" {
		files, prefix = os.DirFS(src), "."
	}
	if err := os.MkdirAll(confDir(labDir), 0o755); err != nil {
		return err
	}
	for _, name := range []string{agentConf, controllerConf} {
		data, err := fs.ReadFile(files, filepath.Join(prefix, name))
		if err != nil {
			return fmt.Errorf("configuration file %s: %w", name, err)
		}
		if err := os.WriteFile(ConfFile(labDir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Package flagfile loads a component's configuration file into its flags.
// The file is YAML whose keys are the program's flag names, so the file and
// `--help` document the same options; a flag given on the command line wins
// over the file.
package flagfile

import (
	"fmt"
	"os"
	"sort"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Register adds --config to fs and returns where its value lands.
func Register(fs *pflag.FlagSet) *string {
	return fs.String("config", "", "Path to a configuration file: YAML whose keys are flag names. Flags on the command line override it.")
}

// Load applies the file at path to every flag not set on the command line.
// Unknown keys and values a flag rejects are errors, naming the key.
func Load(fs *pflag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading configuration: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return fmt.Errorf("configuration %s is not valid YAML: %w", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("configuration %s: unknown key %q (keys are the program's flag names)", path, k)
		}
		if f.Changed {
			continue
		}
		v := values[k]
		switch v.(type) {
		case map[string]any, []any:
			return fmt.Errorf("configuration %s: key %q must be a single value", path, k)
		case nil:
			continue
		}
		if err := fs.Set(k, fmt.Sprint(v)); err != nil {
			return fmt.Errorf("configuration %s: key %q: %w", path, k, err)
		}
	}
	return nil
}

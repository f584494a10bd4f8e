package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// outputFormats are the values of -o, as in kubectl.
var outputFormats = []string{"table", "wide", "json", "yaml"}

// table is what a command prints as a table: headers and rows, with the
// columns beyond Narrow shown only by -o wide.
type table struct {
	Headers []string
	Rows    [][]string
	// Narrow is how many leading columns -o table shows (all if 0).
	Narrow int
}

// print writes v in the chosen format; tab renders it for table and wide.
func print(w io.Writer, format string, v any, tab func() table) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "wide":
		t := tab()
		n := len(t.Headers)
		if format == "table" && t.Narrow > 0 {
			n = t.Narrow
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(t.Headers[:n], "\t"))
		for _, r := range t.Rows {
			fmt.Fprintln(tw, strings.Join(r[:n], "\t"))
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(outputFormats, ", "))
}

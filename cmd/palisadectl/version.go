package main

import (
	"io"

	"palisade.dev/palisade/cmd/internal/version"
)

func init() {
	register(command{name: "version", summary: "Print palisadectl's version.", run: runVersion})
}

func runVersion(args []string, out io.Writer) error {
	fs := flagSet("version", "Print palisadectl's version.", out)
	o := outputFlag(fs, "table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	v := version.Get()
	return print(out, *o, v, func() table {
		return table{Headers: []string{"VERSION", "GO", "REVISION"}, Rows: [][]string{{v.Version, v.GoVersion, v.Revision}}}
	})
}

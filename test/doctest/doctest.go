// Package doctest finds the commands of a Markdown document and runs them,
// so that a test can run every command a document tells its reader to run.
//
// A fenced block whose info string names a shell (sh, bash, shell, console)
// is a block of commands. It must be preceded by a marker naming the
// environment the test runs it in:
//
//	<!-- doctest: lab -->
//	```sh
//	bin/palisade-lab up --nodes 2
//	```
//
// A command block without a marker is an error, so a document cannot grow a
// command that no test runs. Blocks of other languages (yaml, text) are
// examples or output and are not run.
package doctest

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// Block is one fenced block of commands.
type Block struct {
	// Kind is the marker's word: which environment runs the block.
	Kind string
	// Line is the 1-based line of the opening fence.
	Line int
	// Script is the block's text, one command per line.
	Script string
}

var (
	markerRE = regexp.MustCompile(`^<!--\s*doctest:\s*([a-z][a-z0-9-]*)\s*-->$`)
	// A fence may be indented by up to three spaces (CommonMark), e.g.
	// inside a list item.
	fenceRE = regexp.MustCompile("^ {0,3}(```+|~~~+)\\s*([A-Za-z0-9_-]*)")
	shells  = map[string]bool{"sh": true, "bash": true, "shell": true, "console": true}
)

// Parse returns the command blocks of md in document order. It fails if a
// command block has no marker, a marker is not followed by a command block,
// or a fence is not closed.
func Parse(md string) ([]Block, error) {
	var (
		blocks []Block
		errs   []string
		marker string // pending marker's kind
		markAt int
	)
	sc := bufio.NewScanner(strings.NewReader(md))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t")
		if m := markerRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			if marker != "" {
				errs = append(errs, fmt.Sprintf("line %d: doctest marker is not followed by a command block", markAt))
			}
			marker, markAt = m[1], n
			continue
		}
		f := fenceRE.FindStringSubmatch(line)
		if f == nil {
			if strings.TrimSpace(line) != "" && marker != "" {
				errs = append(errs, fmt.Sprintf("line %d: doctest marker is not followed by a command block", markAt))
				marker = ""
			}
			continue
		}
		// A fenced block: read to its closing fence.
		start, fence, lang := n, f[1], strings.ToLower(f[2])
		var body []string
		closed := false
		for sc.Scan() {
			n++
			l := sc.Text()
			if strings.HasPrefix(strings.TrimSpace(l), fence) && strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(l), fence[:1])) == "" {
				closed = true
				break
			}
			body = append(body, l)
		}
		if !closed {
			errs = append(errs, fmt.Sprintf("line %d: the fenced block is not closed", start))
			break
		}
		switch {
		case shells[lang] && marker == "":
			errs = append(errs, fmt.Sprintf("line %d: a %s block without a <!-- doctest: KIND --> marker: no test would run it", start, lang))
		case shells[lang]:
			blocks = append(blocks, Block{Kind: marker, Line: start, Script: strings.Join(body, "\n") + "\n"})
		case marker != "":
			errs = append(errs, fmt.Sprintf("line %d: doctest marker is followed by a %q block, not a shell block", markAt, lang))
		}
		marker = ""
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if marker != "" {
		errs = append(errs, fmt.Sprintf("line %d: doctest marker at the end of the document", markAt))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("doctest: %s", strings.Join(errs, "; "))
	}
	return blocks, nil
}

// Script joins the blocks of one kind into one bash script that stops at
// the first failing command (set -euo pipefail) and announces each block
// with its document line, so a failure points at the document. name is the
// document's name in those announcements.
func Script(name string, blocks []Block, kind string) string {
	var b strings.Builder
	b.WriteString("set -euo pipefail\n")
	for _, bl := range blocks {
		if bl.Kind != kind {
			continue
		}
		fmt.Fprintf(&b, "echo %s >&2\n", shellQuote(fmt.Sprintf("### %s:%d", name, bl.Line)))
		b.WriteString(bl.Script)
	}
	return b.String()
}

// Run runs script with bash in dir with env (added to nothing: pass the
// whole environment), returning its combined output.
func Run(ctx context.Context, dir string, env []string, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

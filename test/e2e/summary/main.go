// Command summary reads `go test -json` on standard input, prints the tests'
// output as it arrives (what `go test -v` would print), and ends with a
// table of every test and subtest: name, result and seconds. It exits 1 if
// any test or package failed, or if no test ran.
//
//	go test -json -tags e2e ./test/e2e/ | go run ./test/e2e/summary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

func main() {
	ok, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "summary:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// outcome is one test's result.
type outcome struct {
	name    string
	result  string // pass, fail, skip, or "running" if it never finished
	seconds float64
}

// summarize copies the output of the events in r to w, then writes the
// table. ok is false if anything failed or nothing ran.
func summarize(r io.Reader, w io.Writer) (ok bool, err error) {
	var order []string
	results := map[string]*outcome{}
	pkgFailed := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (e.g. a build error printed by go itself).
			fmt.Fprintf(w, "%s\n", line)
			continue
		}
		switch e.Action {
		case "output", "build-output":
			fmt.Fprint(w, e.Output)
			continue
		case "build-fail":
			pkgFailed = true
			continue
		}
		if e.Test == "" {
			if e.Action == "fail" {
				pkgFailed = true
			}
			continue
		}
		key := e.Package + " " + e.Test
		o, seen := results[key]
		if !seen {
			o = &outcome{name: e.Test, result: "running"}
			results[key] = o
			order = append(order, key)
		}
		switch e.Action {
		case "pass", "fail", "skip":
			o.result, o.seconds = e.Action, e.Elapsed
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	ok = !pkgFailed && len(order) > 0
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\n=== summary")
	fmt.Fprintln(tw, "TEST\tRESULT\tSECONDS")
	counts := map[string]int{}
	for _, k := range order {
		o := results[k]
		counts[o.result]++
		if o.result != "pass" && o.result != "skip" {
			ok = false
		}
		indent := strings.Repeat("  ", strings.Count(o.name, "/"))
		fmt.Fprintf(tw, "%s%s\t%s\t%.2f\n", indent, o.name, strings.ToUpper(o.result), o.seconds)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d passed, %d failed, %d skipped", counts["pass"], counts["fail"], counts["skip"])
	if n := counts["running"]; n > 0 {
		fmt.Fprintf(w, ", %d never finished (timeout or crash)", n)
	}
	if pkgFailed {
		fmt.Fprint(w, "; a package failed (see its output above)")
	}
	if len(order) == 0 {
		fmt.Fprint(w, "; no test ran (check -run)")
	}
	fmt.Fprintln(w)
	return ok, nil
}

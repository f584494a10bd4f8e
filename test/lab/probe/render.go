package probe

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// Table renders the matrix for people: one row per source pod, one column
// per destination pod, "." where the connection was allowed and "X" where it
// was blocked, followed by a count.
//
//	TCP/80   x/a  x/b
//	x/a      .    X
//	x/b      .    .
//	3/4 allowed
func (r *Result) Table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "%s/%d\t%s\n", r.Protocol, r.Port, strings.Join(r.Pods, "\t"))
	allowed := 0
	for i, from := range r.Pods {
		marks := make([]string, len(r.Pods))
		for j := range r.Pods {
			marks[j] = "X"
			if r.Cells[i*len(r.Pods)+j].Allowed {
				marks[j] = "."
				allowed++
			}
		}
		fmt.Fprintf(w, "%s\t%s\n", from, strings.Join(marks, "\t"))
	}
	_ = w.Flush()
	fmt.Fprintf(&b, "%d/%d allowed\n", allowed, len(r.Cells))
	return b.String()
}

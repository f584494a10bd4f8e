package doctest

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	md := "# Title\n\n" +
		"<!-- doctest: cluster -->\n```sh\nkubectl apply -f x.yml\n```\n\n" +
		"```yaml\nkind: Pod\n```\n\n" +
		"<!-- doctest: lab -->\n\n```bash\nmake build\nbin/palisade-lab up\n```\n" +
		"```text\noutput\n```\n"
	got, err := Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	want := []Block{
		{Kind: "cluster", Line: 4, Script: "kubectl apply -f x.yml\n"},
		{Kind: "lab", Line: 14, Script: "make build\nbin/palisade-lab up\n"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Parse (-want +got):\n%s", d)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ md, want string }{
		"unmarked shell block": {"```sh\nrm -rf /\n```\n", "line 1: a sh block without"},
		"unmarked console":     {"text\n\n```console\nls\n```\n", "line 3: a console block without"},
		"unmarked in a list":   {"1. step\n   ```sh\n   ls\n   ```\n", "line 2: a sh block without"},
		"marker before prose":  {"<!-- doctest: lab -->\nprose\n```sh\nls\n```\n", "line 1: doctest marker is not followed"},
		"marker before yaml":   {"<!-- doctest: lab -->\n```yaml\na: b\n```\n", `followed by a "yaml" block`},
		"marker at the end":    {"<!-- doctest: lab -->\n", "marker at the end"},
		"unclosed fence":       {"<!-- doctest: lab -->\n```sh\nls\n", "not closed"},
		"two markers":          {"<!-- doctest: a -->\n<!-- doctest: b -->\n```sh\nls\n```\n", "line 1: doctest marker is not followed"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.md)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestScriptRunsBlocksOfOneKindAndStopsAtFailure(t *testing.T) {
	blocks := []Block{
		{Kind: "lab", Line: 3, Script: "X=1\necho one\n"},
		{Kind: "cluster", Line: 9, Script: "echo never\n"},
		{Kind: "lab", Line: 12, Script: "echo two $X\nfalse\necho after\n"},
	}
	out, err := Run(context.Background(), t.TempDir(), nil, Script("install.md", blocks, "lab"))
	if err == nil {
		t.Fatalf("the script did not fail at `false`; output:\n%s", out)
	}
	for _, want := range []string{"### install.md:3", "one", "### install.md:12", "two 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"never", "after", "install.md:9"} {
		if strings.Contains(out, not) {
			t.Errorf("output has %q:\n%s", not, out)
		}
	}
}

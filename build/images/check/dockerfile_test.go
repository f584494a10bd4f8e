package check

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// TestDockerfiles parses every Dockerfile under build/images with BuildKit's
// parser, turns it into build stages, and fails on any parse error, parser
// warning or BuildKit lint finding. It also checks that every file the
// Dockerfiles COPY from the repository exists.
func TestDockerfiles(t *testing.T) {
	files, err := filepath.Glob("../*/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d Dockerfiles, want the controller's and the agent's", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			res, err := parser.Parse(strings.NewReader(string(b)))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			for _, w := range res.Warnings {
				t.Errorf("parser warning: %s", w.Short)
			}
			var findings []string
			lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
				findings = append(findings, fmt.Sprintf("%s: %s", rule, msg))
			}})
			stages, _, err := instructions.Parse(res.AST, lint)
			if err != nil {
				t.Fatalf("instructions: %v", err)
			}
			for _, l := range findings {
				t.Errorf("lint: %s", l)
			}
			last := stages[len(stages)-1]
			var hasEntry bool
			for _, c := range last.Commands {
				switch c := c.(type) {
				case *instructions.EntrypointCommand:
					hasEntry = true
				case *instructions.CopyCommand:
					if c.From != "" {
						continue
					}
					for _, src := range c.SourcePaths {
						if _, err := os.Stat(filepath.Join("..", "..", "..", src)); err != nil {
							t.Errorf("COPY source %s does not exist in the repository", src)
						}
					}
				}
			}
			if !hasEntry {
				t.Errorf("the final stage has no ENTRYPOINT")
			}
		})
	}
}

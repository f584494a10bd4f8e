// Command gen-manifests renders build/yamls/palisade.yml, the one file users
// `kubectl apply -f`, from the sources in build/yamls: base/*.yaml (Go
// templates, in file name order) and conf/* (the components' configuration
// files, shipped as the palisade-config ConfigMap). Pods carry a checksum of
// that ConfigMap, so they roll when the configuration changes.
//
//	go run ./hack/gen-manifests            # rewrite build/yamls/palisade.yml
//	go run ./hack/gen-manifests -check     # fail if it is out of date
//	go run ./hack/gen-manifests -image R/palisade-controller:T -agent-image R/palisade-agent:T -o palisade.yml
//	                                       # the same for your own images, into another file
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"palisade.dev/palisade/hack/gen-manifests/manifests"
)

func main() {
	dir := flag.String("dir", "build/yamls", "directory holding base/, conf/ and the output")
	check := flag.Bool("check", false, "only check that the output is up to date")
	output := flag.String("o", "", "write the manifest to this file instead of DIR/"+manifests.Output+" (- for standard output)")
	flag.StringVar(&manifests.DefaultValues.Image, "image", manifests.DefaultValues.Image, "controller image")
	flag.StringVar(&manifests.DefaultValues.AgentImage, "agent-image", manifests.DefaultValues.AgentImage, "agent image")
	flag.Parse()

	out, err := manifests.Render(*dir, manifests.DefaultValues)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen-manifests: %v\n", err)
		os.Exit(1)
	}
	path := filepath.Join(*dir, manifests.Output)
	if *output == "-" {
		fmt.Print(out)
		return
	}
	if *output != "" {
		path = *output
	}
	if *check {
		cur, err := os.ReadFile(path)
		if err != nil || string(cur) != out {
			fmt.Fprintf(os.Stderr, "gen-manifests: %s is out of date; run `make manifests`\n", path)
			os.Exit(1)
		}
		return
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gen-manifests: %v\n", err)
		os.Exit(1)
	}
}

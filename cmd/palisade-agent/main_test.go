package main

import (
	"testing"

	"palisade.dev/palisade/agent"
)

// TestShippedConfig loads the configuration file the manifest ships through
// the program's real flag set: every key must be one of its flags.
func TestShippedConfig(t *testing.T) {
	o := agent.NewOptions()
	if err := command(o).Parse([]string{"--config=../../build/yamls/conf/palisade-agent.conf"}); err != nil {
		t.Fatal(err)
	}
}

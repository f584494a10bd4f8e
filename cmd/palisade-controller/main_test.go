package main

import (
	"testing"

	"palisade.dev/palisade/controller"
)

// TestShippedConfig loads the configuration file the manifest ships through
// the program's real flag set: every key must be one of its flags.
func TestShippedConfig(t *testing.T) {
	o := controller.NewOptions()
	if err := command(o).Parse([]string{"--config=../../build/yamls/conf/palisade-controller.conf"}); err != nil {
		t.Fatal(err)
	}
}

// Package vswitchd holds libovsdb models of the Open_vSwitch database,
// generated from the schema of Open vSwitch 3.1 (vswitch.ovsschema, copied
// from /usr/share/openvswitch/vswitch.ovsschema, schema version 8.3.1).
//
// Regenerate with `go generate ./ovs/ovsconfig/vswitchd/`, which runs
//
//	go -C modelgen tool modelgen -p vswitchd -o .. ../vswitch.ovsschema
//
// The modelgen tool is pinned (libovsdb v0.8.1) in the separate module in
// ./modelgen so that its dependencies stay out of the main go.mod.
package vswitchd

//go:generate go -C modelgen tool modelgen -p vswitchd -o .. ../vswitch.ovsschema

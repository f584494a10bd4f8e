// Package ovsconfig manages OVSDB state of one bridge through libovsdb: the
// bridge itself, its ports and the names of its flow tables. Rows Palisade
// creates are marked in external_ids so a restarted agent can find them.
package ovsconfig

import "context"

// Port is an OVS port (with its single interface) owned by Palisade.
type Port struct {
	Name        string
	OFPort      int32
	ExternalIDs map[string]string
}

// BridgeConfig is how the agent configures its bridge. It is implemented by
// the libovsdb client in this package; tests of pure logic may fake it.
type BridgeConfig interface {
	// EnsureBridge creates the bridge if it is missing (datapath_type as
	// configured, OpenFlow15 allowed, fail_mode=secure) and is a no-op
	// otherwise.
	EnsureBridge(ctx context.Context) error
	// SetTableNames writes OVSDB Flow_Table rows named as given and
	// references them from Bridge.flow_tables, replacing earlier names.
	SetTableNames(ctx context.Context, names map[uint8]string) error
	// CreatePort adds a port with one interface of the given name (type ""
	// for a system device such as a veth end, or e.g. "internal"),
	// marks it with externalIDs, and waits until OVS assigned its ofport.
	// Creating a port that exists with the same name returns the existing one.
	CreatePort(ctx context.Context, name, ifType string, externalIDs map[string]string) (Port, error)
	// DeletePort removes the port; deleting a missing port succeeds.
	DeletePort(ctx context.Context, name string) error
	// ListPorts returns the bridge's ports whose external_ids contain all of
	// the given key/value pairs (all ports when match is empty).
	ListPorts(ctx context.Context, match map[string]string) ([]Port, error)
}

package ovsctl

import (
	"context"
	"errors"
)

// Trace runs `ovs-appctl ofproto/trace BRIDGE FLOW` on ovs-vswitchd's
// unixctl socket and returns its text. flow is in ovs-ofctl syntax. Each
// ctNext entry is the conntrack state (e.g. "trk,new") that one ct()
// recirculation resumes with, in order (--ct-next); without them OVS
// resumes every recirculation with trk,new.
func Trace(ctx context.Context, socket, bridge, flow string, ctNext ...string) (string, error) {
	if bridge == "" || flow == "" {
		return "", errors.New("ofproto/trace needs a bridge and a flow")
	}
	args := []string{bridge, flow}
	for _, s := range ctNext {
		args = append(args, "--ct-next", s)
	}
	return Appctl(ctx, socket, "ofproto/trace", args...)
}

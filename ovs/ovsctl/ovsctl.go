// Package ovsctl runs commands on an OVS daemon's unixctl socket (what
// `ovs-appctl -t SOCKET COMMAND` does): JSON-RPC over a unix socket.
package ovsctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

type request struct {
	Method string   `json:"method"`
	Params []string `json:"params"`
	ID     int      `json:"id"`
}

type response struct {
	Result *string          `json:"result"`
	Error  *json.RawMessage `json:"error"`
	ID     int              `json:"id"`
}

// Appctl runs command with args on the daemon listening on socket and
// returns its output. A command the daemon rejects is an error carrying the
// daemon's message.
func Appctl(ctx context.Context, socket, command string, args ...string) (string, error) {
	if args == nil {
		args = []string{}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", fmt.Errorf("ovs-appctl %s: %w", command, err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	if err := json.NewEncoder(conn).Encode(request{Method: command, Params: args}); err != nil {
		return "", fmt.Errorf("ovs-appctl %s: %w", command, err)
	}
	var resp response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return "", fmt.Errorf("ovs-appctl %s: reading the reply: %w", command, err)
	}
	if resp.Error != nil && string(*resp.Error) != "null" {
		var msg string
		if json.Unmarshal(*resp.Error, &msg) != nil {
			msg = string(*resp.Error)
		}
		return "", fmt.Errorf("ovs-appctl %s: %s", command, msg)
	}
	if resp.Result == nil {
		return "", nil
	}
	return *resp.Result, nil
}

package noderuntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// CNI plugin constants: the lab runs palisade-cni the way a container
// runtime does.
const (
	cniVersion    = "1.1.0"
	cniNetName    = "palisade"
	cniPluginName = "palisade-cni"
	cniIfName     = "eth0"
	cniTimeout    = 30 * time.Second
)

// cniCall is one plugin invocation.
type cniCall struct {
	Command     string // ADD, DEL or CHECK
	ContainerID string
	Netns       string // path
	PodNS       string
	PodName     string
	Path        string // CNI_PATH: where plugins live
}

// cniEnv returns base (the runtime's environment, minus any CNI_
// variables) plus the CNI variables of call.
func cniEnv(base []string, call cniCall) []string {
	env := make([]string, 0, len(base)+6)
	for _, kv := range base {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"CNI_COMMAND="+call.Command,
		"CNI_CONTAINERID="+call.ContainerID,
		"CNI_NETNS="+call.Netns,
		"CNI_IFNAME="+cniIfName,
		"CNI_ARGS="+fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s", call.PodNS, call.PodName, call.ContainerID),
		"CNI_PATH="+call.Path,
	)
}

// cniNetConf is the network configuration given on stdin.
type cniNetConf struct {
	CNIVersion  string          `json:"cniVersion"`
	Name        string          `json:"name"`
	Type        string          `json:"type"`
	AgentSocket string          `json:"agentSocket"`
	PrevResult  json.RawMessage `json:"prevResult,omitempty"`
}

// netConf renders the configuration; prevResult is the ADD result, which a
// runtime passes back on DEL and CHECK.
func netConf(agentSocket string, prevResult json.RawMessage) []byte {
	b, _ := json.Marshal(cniNetConf{ // cannot fail: plain strings and valid raw JSON
		CNIVersion: cniVersion, Name: cniNetName, Type: cniPluginName,
		AgentSocket: agentSocket, PrevResult: prevResult,
	})
	return b
}

// invokeCNI runs the plugin and returns its stdout. A failing plugin's CNI
// error (JSON on stdout) becomes the returned error.
func invokeCNI(ctx context.Context, plugin string, call cniCall, conf []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Env = cniEnv(os.Environ(), call)
	cmd.Stdin = bytes.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var cniErr cnitypes.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Msg != "" {
			return nil, fmt.Errorf("%s %s: %w", cniPluginName, call.Command, &cniErr)
		}
		if out := strings.TrimSpace(stderr.String() + " " + stdout.String()); out != "" {
			err = fmt.Errorf("%w: %s", err, out)
		}
		return nil, fmt.Errorf("%s %s: %w", cniPluginName, call.Command, err)
	}
	return stdout.Bytes(), nil
}

// parseAddResult returns the first IPv4 address of an ADD result.
func parseAddResult(out []byte) (netip.Addr, error) {
	var res types100.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return netip.Addr{}, fmt.Errorf("parse %s result %q: %w", cniPluginName, out, err)
	}
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, errors.New(cniPluginName + " result has no IPv4 address: " + string(out))
}

// Package protocol defines what the palisade-cni plugin and the Palisade
// agent send each other: JSON over HTTP on the agent's root-only unix socket.
//
//	POST /v1/cni     body: Request        reply: Response (Result set on a successful ADD)
//	GET  /v1/status                       reply: Response (no Result)
//
// A reply always carries a Response body; on failure its Error is the CNI
// error the plugin returns to the runtime, and the HTTP status is not 200.
package protocol

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
)

// DefaultSocketPath is where the agent listens unless the network
// configuration's agentSocket says otherwise.
const DefaultSocketPath = "/var/run/palisade/cni.sock"

// HTTP paths served by the agent.
const (
	PathCNI    = "/v1/cni"
	PathStatus = "/v1/status"
)

// Command is a CNI command the agent carries out.
type Command string

// Commands forwarded to the agent. STATUS uses PathStatus instead.
const (
	CommandAdd   Command = "ADD"
	CommandDel   Command = "DEL"
	CommandCheck Command = "CHECK"
)

// Request is one CNI invocation, as the runtime gave it to the plugin.
type Request struct {
	Command     Command `json:"command"`
	ContainerID string  `json:"containerID"`
	// Netns is the path of the pod's network namespace (CNI_NETNS). It may
	// be empty for DEL.
	Netns  string `json:"netns,omitempty"`
	IfName string `json:"ifName"`
	// PodNamespace and PodName come from CNI_ARGS (K8S_POD_NAMESPACE,
	// K8S_POD_NAME).
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	// NetConf is the network configuration the runtime passed on stdin,
	// unchanged (for CHECK it includes prevResult).
	NetConf json.RawMessage `json:"netConf,omitempty"`
}

// Response is the agent's answer.
type Response struct {
	// Result is a CNI 1.x (types/100) result; the plugin converts it to the
	// configuration's cniVersion.
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// Validate checks the fields the command needs and returns a CNI error
// naming the first problem.
func (r *Request) Validate() *types.Error {
	switch r.Command {
	case CommandAdd, CommandDel, CommandCheck:
	default:
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI command %q", r.Command), "")
	}
	if err := utils.ValidateContainerID(r.ContainerID); err != nil {
		return err
	}
	if err := utils.ValidateInterfaceName(r.IfName); err != nil {
		return err
	}
	if r.Command == CommandDel {
		return nil
	}
	if r.Netns == "" {
		return types.NewError(types.ErrInvalidNetNS, "network namespace path (CNI_NETNS) is empty", "")
	}
	if r.PodNamespace == "" || r.PodName == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			"CNI_ARGS must name the pod with K8S_POD_NAMESPACE and K8S_POD_NAME", "")
	}
	return nil
}

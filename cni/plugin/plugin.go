// Package plugin is the palisade-cni binary's logic: a thin client that
// forwards each CNI command to the Palisade agent over its unix socket and
// hands the agent's result or error back to the container runtime.
package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"palisade.dev/palisade/cni/protocol"
)

// requestTimeout bounds one call to the agent. A runtime usually has its own,
// longer timeout for the whole sandbox setup.
const requestTimeout = 90 * time.Second

// NetConf is the plugin's network configuration (stdin).
type NetConf struct {
	types.NetConf
	// AgentSocket is the agent's socket; protocol.DefaultSocketPath if empty.
	AgentSocket string `json:"agentSocket,omitempty"`
}

// k8sArgs are the CNI_ARGS keys the plugin reads; others are ignored.
// types.LoadArgs matches keys to field names, hence the spelling.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString
	K8S_POD_NAME      types.UnmarshallableString
}

// Plugin implements the CNI commands. Results are written to Stdout.
type Plugin struct {
	Stdout io.Writer
}

// Funcs returns the command handlers for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}
}

// Add asks the agent to attach the pod and prints the result in the
// configuration's cniVersion.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, req, err := buildRequest(protocol.CommandAdd, args)
	if err != nil {
		return err
	}
	resp, err := call(conf.AgentSocket, http.MethodPost, protocol.PathCNI, req)
	if err != nil {
		return err
	}
	if len(resp.Result) == 0 {
		return types.NewError(types.ErrInternal, "palisade-cni: the agent answered ADD without a result", "")
	}
	result, err := types100.NewResult(resp.Result)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "palisade-cni: cannot decode the agent's result", err.Error())
	}
	versioned, err := result.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("palisade-cni: cannot express the result in CNI version %q", conf.CNIVersion), err.Error())
	}
	return versioned.PrintTo(p.Stdout)
}

// Del asks the agent to detach the pod. Detaching a pod that is not
// attached succeeds.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, req, err := buildRequest(protocol.CommandDel, args)
	if err != nil {
		return err
	}
	_, err = call(conf.AgentSocket, http.MethodPost, protocol.PathCNI, req)
	return err
}

// Check asks the agent to verify the pod's attachment.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, req, err := buildRequest(protocol.CommandCheck, args)
	if err != nil {
		return err
	}
	_, err = call(conf.AgentSocket, http.MethodPost, protocol.PathCNI, req)
	return err
}

// Status fails unless the agent is reachable and ready to attach pods.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	_, err = call(conf.AgentSocket, http.MethodGet, protocol.PathStatus, nil)
	return err
}

func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "palisade-cni: cannot parse the network configuration on stdin", err.Error())
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = protocol.DefaultSocketPath
	}
	return conf, nil
}

func buildRequest(cmd protocol.Command, args *skel.CmdArgs) (*NetConf, *protocol.Request, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	ka := k8sArgs{CommonArgs: types.CommonArgs{IgnoreUnknown: true}}
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables, "palisade-cni: cannot parse CNI_ARGS", err.Error())
	}
	req := &protocol.Request{
		Command:      cmd,
		ContainerID:  args.ContainerID,
		Netns:        args.Netns,
		IfName:       args.IfName,
		PodNamespace: string(ka.K8S_POD_NAMESPACE),
		PodName:      string(ka.K8S_POD_NAME),
		NetConf:      json.RawMessage(args.StdinData),
	}
	if err := req.Validate(); err != nil {
		err.Msg = "palisade-cni: " + err.Msg
		return nil, nil, err
	}
	return conf, req, nil
}

// call sends one request to the agent and returns its response, or the CNI
// error to report.
func call(socket, method, path string, req *protocol.Request) (*protocol.Response, error) {
	unreachableCode := types.ErrTryAgainLater
	if path == protocol.PathStatus {
		unreachableCode = types.ErrPluginNotAvailable
	}
	var body io.Reader
	if req != nil {
		data, err := json.Marshal(req)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "palisade-cni: cannot encode the request", err.Error())
		}
		body = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, method, "http://palisade-agent"+path, body)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "palisade-cni: cannot build the request", err.Error())
	}
	httpReq.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	httpResp, err := client.Do(httpReq)
	if err != nil {
		// The URL is made up; the dial or I/O error is what helps.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return nil, types.NewError(unreachableCode, fmt.Sprintf("palisade-cni: cannot reach the Palisade agent at %s: %v", socket, err), "")
	}
	defer httpResp.Body.Close()
	data, err := io.ReadAll(httpResp.Body)
	if err != nil {
		return nil, types.NewError(unreachableCode, fmt.Sprintf("palisade-cni: reading the answer of the Palisade agent at %s: %v", socket, err), "")
	}
	var resp protocol.Response
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("palisade-cni: unexpected answer from the Palisade agent at %s (HTTP %d)", socket, httpResp.StatusCode),
			truncate(string(data), 200))
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	if httpResp.StatusCode != http.StatusOK {
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("palisade-cni: the Palisade agent at %s failed with HTTP %d", socket, httpResp.StatusCode), "")
	}
	return &resp, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

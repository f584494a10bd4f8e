package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"palisade.dev/palisade/cni/protocol"
)

const agentResult = `{"cniVersion":"1.1.0",` +
	`"interfaces":[{"name":"pal12345678","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/p"}],` +
	`"ips":[{"interface":1,"address":"198.18.0.2/24","gateway":"198.18.0.1"}],` +
	`"routes":[{"dst":"0.0.0.0/0","gw":"198.18.0.1"}]}`

// fakeAgent serves the agent protocol on a unix socket in a temp dir and
// records the requests it got.
type fakeAgent struct {
	socket   string
	requests []protocol.Request
	paths    []string
	status   int
	body     string
}

func startFakeAgent(t *testing.T, status int, body string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{socket: filepath.Join(t.TempDir(), "cni.sock"), status: status, body: body}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatalf("listening on %s: %v", f.socket, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.paths = append(f.paths, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodPost {
			var req protocol.Request
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				t.Errorf("fake agent: bad request body: %v", err)
			}
			f.requests = append(f.requests, req)
		}
		w.WriteHeader(f.status)
		_, _ = w.Write([]byte(f.body))
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func netConf(version, socket string) []byte {
	return []byte(`{"cniVersion":"` + version + `","name":"palisade","type":"palisade-cni","agentSocket":"` + socket + `"}`)
}

func cmdArgs(stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{
		ContainerID: "c0ffee", Netns: "/run/netns/p", IfName: "eth0",
		Args:      "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u",
		Path:      "/opt/cni/bin",
		StdinData: stdin,
	}
}

func TestAddForwardsAndConvertsResult(t *testing.T) {
	tests := []struct {
		version  string
		wantJSON string
	}{
		{version: "1.1.0", wantJSON: agentResult},
		{version: "1.0.0", wantJSON: strings.Replace(agentResult, "1.1.0", "1.0.0", 1)},
		{
			version: "0.4.0",
			wantJSON: `{"cniVersion":"0.4.0",` +
				`"interfaces":[{"name":"pal12345678","mac":"02:00:00:00:00:01"},{"name":"eth0","mac":"02:00:00:00:00:02","sandbox":"/run/netns/p"}],` +
				`"ips":[{"version":"4","interface":1,"address":"198.18.0.2/24","gateway":"198.18.0.1"}],` +
				`"routes":[{"dst":"0.0.0.0/0","gw":"198.18.0.1"}],"dns":{}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			agent := startFakeAgent(t, http.StatusOK, `{"result":`+agentResult+`}`)
			var out bytes.Buffer
			p := &Plugin{Stdout: &out}
			stdin := netConf(tc.version, agent.socket)
			if err := p.Add(cmdArgs(stdin)); err != nil {
				t.Fatalf("Add() = %v", err)
			}
			want := []protocol.Request{{
				Command: protocol.CommandAdd, ContainerID: "c0ffee", Netns: "/run/netns/p", IfName: "eth0",
				PodNamespace: "ns1", PodName: "a", NetConf: json.RawMessage(stdin),
			}}
			if diff := cmp.Diff(want, agent.requests); diff != "" {
				t.Errorf("request sent to agent (-want +got):\n%s", diff)
			}
			var got, wantOut any
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("printed result is not JSON: %v\n%s", err, out.String())
			}
			if err := json.Unmarshal([]byte(tc.wantJSON), &wantOut); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantOut, got); diff != "" {
				t.Errorf("printed result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDelCheckStatusForward(t *testing.T) {
	agent := startFakeAgent(t, http.StatusOK, `{}`)
	p := &Plugin{Stdout: &bytes.Buffer{}}
	stdin := netConf("1.1.0", agent.socket)
	if err := p.Del(cmdArgs(stdin)); err != nil {
		t.Fatalf("Del() = %v", err)
	}
	if err := p.Check(cmdArgs(stdin)); err != nil {
		t.Fatalf("Check() = %v", err)
	}
	if err := p.Status(&skel.CmdArgs{StdinData: stdin}); err != nil {
		t.Fatalf("Status() = %v", err)
	}
	wantPaths := []string{"POST /v1/cni", "POST /v1/cni", "GET /v1/status"}
	if diff := cmp.Diff(wantPaths, agent.paths); diff != "" {
		t.Errorf("agent calls (-want +got):\n%s", diff)
	}
	if len(agent.requests) == 2 && (agent.requests[0].Command != protocol.CommandDel || agent.requests[1].Command != protocol.CommandCheck) {
		t.Errorf("commands = %s, %s; want DEL, CHECK", agent.requests[0].Command, agent.requests[1].Command)
	}
}

func TestErrors(t *testing.T) {
	missingSocket := filepath.Join(t.TempDir(), "absent.sock")
	tests := []struct {
		name     string
		status   int    // fake agent reply; 0 means no agent at all
		body     string // fake agent reply body
		call     func(p *Plugin, socket string) error
		wantCode uint
		wantMsg  string
	}{
		{
			name: "add: agent socket absent",
			call: func(p *Plugin, _ string) error {
				return p.Add(cmdArgs(netConf("1.1.0", missingSocket)))
			},
			wantCode: types.ErrTryAgainLater,
			wantMsg:  "palisade-cni: cannot reach the Palisade agent at " + missingSocket + ": ",
		},
		{
			name: "status: agent socket absent",
			call: func(p *Plugin, _ string) error {
				return p.Status(&skel.CmdArgs{StdinData: netConf("1.1.0", missingSocket)})
			},
			wantCode: types.ErrPluginNotAvailable,
			wantMsg:  "palisade-cni: cannot reach the Palisade agent at " + missingSocket,
		},
		{
			name:   "agent error passed through",
			status: http.StatusInternalServerError, body: `{"error":{"code":8,"msg":"palisade agent: bad netns","details":"x"}}`,
			call: func(p *Plugin, socket string) error {
				return p.Add(cmdArgs(netConf("1.1.0", socket)))
			},
			wantCode: types.ErrInvalidNetNS,
			wantMsg:  "palisade agent: bad netns",
		},
		{
			name:   "status: agent not ready",
			status: http.StatusServiceUnavailable, body: `{"error":{"code":50,"msg":"palisade agent: not ready"}}`,
			call: func(p *Plugin, socket string) error {
				return p.Status(&skel.CmdArgs{StdinData: netConf("1.1.0", socket)})
			},
			wantCode: types.ErrPluginNotAvailable,
			wantMsg:  "palisade agent: not ready",
		},
		{
			name:   "agent answers garbage",
			status: http.StatusBadGateway, body: `<html>oops</html>`,
			call: func(p *Plugin, socket string) error {
				return p.Del(cmdArgs(netConf("1.1.0", socket)))
			},
			wantCode: types.ErrInternal,
			wantMsg:  "unexpected answer from the Palisade agent",
		},
		{
			name:   "agent fails without error body",
			status: http.StatusInternalServerError, body: `{}`,
			call: func(p *Plugin, socket string) error {
				return p.Check(cmdArgs(netConf("1.1.0", socket)))
			},
			wantCode: types.ErrInternal,
			wantMsg:  "failed with HTTP 500",
		},
		{
			name:   "add without result",
			status: http.StatusOK, body: `{}`,
			call: func(p *Plugin, socket string) error {
				return p.Add(cmdArgs(netConf("1.1.0", socket)))
			},
			wantCode: types.ErrInternal,
			wantMsg:  "without a result",
		},
		{
			name:   "add with undecodable result",
			status: http.StatusOK, body: `{"result":{"cniVersion":"7.0.0"}}`,
			call: func(p *Plugin, socket string) error {
				return p.Add(cmdArgs(netConf("1.1.0", socket)))
			},
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "cannot decode the agent's result",
		},
		{
			name: "bad stdin JSON",
			call: func(p *Plugin, _ string) error {
				return p.Add(cmdArgs([]byte(`{"cniVersion":`)))
			},
			wantCode: types.ErrDecodingFailure,
			wantMsg:  "palisade-cni: cannot parse the network configuration on stdin",
		},
		{
			name: "bad CNI_ARGS",
			call: func(p *Plugin, socket string) error {
				a := cmdArgs(netConf("1.1.0", socket))
				a.Args = "K8S_POD_NAME"
				return p.Add(a)
			},
			wantCode: types.ErrInvalidEnvironmentVariables,
			wantMsg:  "palisade-cni: cannot parse CNI_ARGS",
		},
		{
			name: "pod not named",
			call: func(p *Plugin, socket string) error {
				a := cmdArgs(netConf("1.1.0", socket))
				a.Args = "K8S_POD_NAMESPACE=ns1"
				return p.Add(a)
			},
			wantCode: types.ErrInvalidEnvironmentVariables,
			wantMsg:  "palisade-cni: CNI_ARGS must name the pod",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			socket := missingSocket
			if tc.status != 0 {
				socket = startFakeAgent(t, tc.status, tc.body).socket
			}
			var out bytes.Buffer
			err := tc.call(&Plugin{Stdout: &out}, socket)
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("error = %v (%T), want a *types.Error", err, err)
			}
			if cniErr.Code != tc.wantCode || !strings.Contains(cniErr.Msg, tc.wantMsg) {
				t.Fatalf("error = {code %d, %q}, want code %d and message containing %q", cniErr.Code, cniErr.Msg, tc.wantCode, tc.wantMsg)
			}
			if out.Len() != 0 {
				t.Errorf("a failed command printed %q", out.String())
			}
		})
	}
}

func TestDefaultSocket(t *testing.T) {
	conf, err := parseConf([]byte(`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.AgentSocket != protocol.DefaultSocketPath {
		t.Fatalf("AgentSocket = %q, want %q", conf.AgentSocket, protocol.DefaultSocketPath)
	}
}

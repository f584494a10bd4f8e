package protocol

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func TestRequestJSONRoundTrip(t *testing.T) {
	in := Request{
		Command: CommandAdd, ContainerID: "abc", Netns: "/run/netns/p", IfName: "eth0",
		PodNamespace: "ns", PodName: "a",
		NetConf: json.RawMessage(`{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni"}`),
	}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"command":"ADD","containerID":"abc","netns":"/run/netns/p","ifName":"eth0","podNamespace":"ns","podName":"a",` +
		`"netConf":{"cniVersion":"1.1.0","name":"palisade","type":"palisade-cni"}}`
	if string(data) != want {
		t.Fatalf("encoded request:\n got %s\nwant %s", data, want)
	}
	var out Request
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestResponseJSON(t *testing.T) {
	tests := []struct {
		name string
		resp Response
		want string
	}{
		{name: "empty success", resp: Response{}, want: `{}`},
		{name: "result", resp: Response{Result: json.RawMessage(`{"cniVersion":"1.1.0"}`)}, want: `{"result":{"cniVersion":"1.1.0"}}`},
		{
			name: "error",
			resp: Response{Error: types.NewError(types.ErrInvalidNetNS, "bad netns", "details")},
			want: `{"error":{"code":8,"msg":"bad netns","details":"details"}}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tc.want {
				t.Fatalf("got %s, want %s", data, tc.want)
			}
			var back Response
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.resp, back); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Request{Command: CommandAdd, ContainerID: "abc", Netns: "/run/netns/x", IfName: "eth0", PodNamespace: "ns", PodName: "a"}
	tests := []struct {
		name     string
		change   func(*Request)
		wantCode uint
		wantMsg  string
	}{
		{name: "valid add", change: func(*Request) {}},
		{name: "valid check", change: func(r *Request) { r.Command = CommandCheck }},
		{name: "del needs no netns or pod", change: func(r *Request) { r.Command, r.Netns, r.PodName = CommandDel, "", "" }},
		{name: "unknown command", change: func(r *Request) { r.Command = "GC" }, wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: "unknown CNI command"},
		{name: "no container", change: func(r *Request) { r.ContainerID = "" }, wantCode: types.ErrUnknownContainer, wantMsg: "containerID"},
		{name: "bad ifname", change: func(r *Request) { r.IfName = "a/b" }, wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: "interface name"},
		{name: "add without netns", change: func(r *Request) { r.Netns = "" }, wantCode: types.ErrInvalidNetNS, wantMsg: "CNI_NETNS"},
		{name: "add without pod", change: func(r *Request) { r.PodName = "" }, wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: "K8S_POD_NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.change(&r)
			err := r.Validate()
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Code != tc.wantCode || !strings.Contains(err.Msg, tc.wantMsg) {
				t.Fatalf("Validate() = %#v, want code %d and message containing %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

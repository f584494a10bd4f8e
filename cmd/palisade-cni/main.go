// Command palisade-cni is the Palisade CNI plugin. The container runtime runs
// it; it forwards each command to the Palisade agent on the node.
package main

import (
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"palisade.dev/palisade/cmd/internal/version"
	"palisade.dev/palisade/cni/plugin"
	"palisade.dev/palisade/cni/protocol"
)

// about is what the plugin prints when it is run without CNI_COMMAND (by a
// person, with or without --help).
func about() string {
	return "CNI plugin palisade-cni " + version.Version + ": the Palisade CNI plugin.\n" +
		"The container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION) and the other CNI_*\n" +
		"variables set and the network configuration on stdin; it forwards each command to the Palisade agent's\n" +
		"socket on the node (the configuration's \"agentSocket\", default " + protocol.DefaultSocketPath + ").\n" +
		"It takes no flags or arguments."
}

func init() {
	// Network namespaces are per-thread state and skel inspects them: keep
	// main on one OS thread.
	runtime.LockOSThread()
}

func main() {
	p := &plugin.Plugin{Stdout: os.Stdout}
	skel.PluginMainFuncs(p.Funcs(), cniversion.All, about())
}

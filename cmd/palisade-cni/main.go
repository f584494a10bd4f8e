// Command palisade-cni is the Palisade CNI plugin. The container runtime runs
// it; it forwards each command to the Palisade agent on the node.
package main

import (
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"palisade.dev/palisade/cni/plugin"
)

func init() {
	// Network namespaces are per-thread state and skel inspects them: keep
	// main on one OS thread.
	runtime.LockOSThread()
}

func main() {
	p := &plugin.Plugin{Stdout: os.Stdout}
	skel.PluginMainFuncs(p.Funcs(), version.All, "palisade-cni: Palisade CNI plugin (forwards to the Palisade agent)")
}

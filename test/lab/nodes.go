package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/proc"
	"palisade.dev/palisade/test/ovsinstance"
)

// NodeOVS returns a handle on node i's Open vSwitch (1-based), for tests
// that inspect its bridges and flows.
func (l *Lab) NodeOVS(i int) *ovsinstance.Instance {
	dir := l.dir.Node(layout.NodeName(i)).OVS()
	return &ovsinstance.Instance{
		Dir: dir, Netns: layout.NodeNetns(i), Bridge: ovsinstance.DefaultBridge,
		DBSock: filepath.Join(dir, "db.sock"), DBEndpoint: "unix:" + filepath.Join(dir, "db.sock"),
		MgmtSock:    filepath.Join(dir, ovsinstance.DefaultBridge+".mgmt"),
		VswitchdCtl: filepath.Join(dir, "vswitchd.ctl"), OvsdbCtl: filepath.Join(dir, "ovsdb.ctl"),
	}
}

// RestartAgent stops node i's palisade-agent (SIGTERM) and starts it again
// with the same command line, as after a crash or an upgrade. It returns
// once the new agent serves its CNI socket, which it does only after it
// rebuilt its pods from OVSDB and installed its flows.
func (l *Lab) RestartAgent(ctx context.Context, i int) error {
	name := layout.NodeName(i) + "-agent"
	procs, err := proc.Read(l.dir.Pids())
	if err != nil {
		return err
	}
	idx := slices.IndexFunc(procs, func(p *proc.Process) bool { return p.Name == name })
	if idx < 0 || !procs[idx].Alive() {
		return fmt.Errorf("%s is not running", name)
	}
	old := procs[idx]
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", old.Pid))
	if err != nil {
		return fmt.Errorf("reading the command line of %s: %w", name, err)
	}
	argv := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if len(argv) == 0 || argv[0] == "" {
		return fmt.Errorf("%s has an empty command line", name)
	}
	if err := old.Stop(ctx, stopGrace); err != nil {
		return err
	}
	l.procs = slices.DeleteFunc(l.procs, func(p *proc.Process) bool { return p.Name == name })
	sock := l.dir.Node(layout.NodeName(i)).CNISocket()
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// `ip netns exec` replaced itself with the agent: run it the same way.
	if filepath.Base(argv[0]) != "ip" {
		argv = append([]string{"ip", "netns", "exec", layout.NodeNetns(i)}, argv...)
	}
	if _, err := l.start(ctx, name, old.Tier, argv[0], argv[1:], old.LogFile); err != nil {
		return err
	}
	return l.waitFor(ctx, name+" CNI socket", 60*time.Second, func(context.Context) (bool, error) {
		_, err := os.Stat(sock)
		return err == nil, nil
	})
}

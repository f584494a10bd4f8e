package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/proc"
	"palisade.dev/palisade/test/lab/underlay"
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

// RestartOVS restarts node i's ovs-vswitchd the way a deployment's OVS
// start script does (build/images/agent/palisade-start-ovs), as after an
// upgrade or a crash of OVS: the old daemon stops (SIGTERM); since the
// bridges exist, other_config:flow-restore-wait=true is set before the new
// one starts, so that it forwards nothing until the agent has installed
// its flows again and cleared the key; then ovs-vswitchd starts with the
// old one's command line and environment. ovsdb-server keeps running.
//
// The userspace datapath lives in ovs-vswitchd: the restart empties its
// conntrack table and recreates the bridges' internal interfaces, so the
// node's address goes back on its underlay bridge (the agent restores its
// gateway itself). RestartOVS returns once the agent has cleared
// flow-restore-wait, that is once the node forwards again.
func (l *Lab) RestartOVS(ctx context.Context, i int) error {
	if i < 1 || i > l.opts.Nodes || l.opts.NoPalisade {
		return fmt.Errorf("node %d has no OVS (the lab has %d nodes, no-palisade=%v)", i, l.opts.Nodes, l.opts.NoPalisade)
	}
	inst := l.NodeOVS(i)
	pidFile := filepath.Join(inst.Dir, "vswitchd.pid")
	pid, argv, env, err := readDaemon(pidFile)
	if err != nil {
		return fmt.Errorf("node %d's ovs-vswitchd: %w", i, err)
	}
	if err := stopPid(ctx, pid, stopGrace); err != nil {
		return fmt.Errorf("stopping node %d's ovs-vswitchd: %w", i, err)
	}
	if _, err := inst.Vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:flow-restore-wait=true"); err != nil {
		return err
	}
	argv = append([]string{"netns", "exec", inst.Netns}, argv...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The daemon detaches: the command returns once it runs.
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("starting node %d's ovs-vswitchd: %w: %s", i, err, strings.TrimSpace(stderr.String()))
	}
	// Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied
	// the database.
	if _, err := inst.Vsctl("--timeout=30", "init"); err != nil {
		return fmt.Errorf("waiting for node %d's ovs-vswitchd: %w", i, err)
	}
	if err := underlay.MoveToOVS(ctx, i, inst.Vsctl); err != nil {
		return err
	}
	return l.waitFor(ctx, fmt.Sprintf("node %d's agent to clear flow-restore-wait", i), 60*time.Second, func(context.Context) (bool, error) {
		out, err := inst.Vsctl("--if-exists", "get", "Open_vSwitch", ".", "other_config:flow-restore-wait")
		return err == nil && strings.TrimSpace(out) == "", err
	})
}

// readDaemon returns the pid, command line and environment of the daemon
// whose pidfile is given.
func readDaemon(pidFile string) (int, []string, []string, error) {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, nil, nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, nil, nil, fmt.Errorf("bad pidfile %s: %q", pidFile, data)
	}
	var fields [2][]string
	for j, f := range []string{"cmdline", "environ"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			return 0, nil, nil, fmt.Errorf("pid %d (from %s) is not running: %w", pid, pidFile, err)
		}
		if s := strings.TrimSuffix(string(data), "\x00"); s != "" {
			fields[j] = strings.Split(s, "\x00")
		}
	}
	if len(fields[0]) == 0 {
		return 0, nil, nil, fmt.Errorf("pid %d (from %s) has an empty command line", pid, pidFile)
	}
	return pid, fields[0], fields[1], nil
}

// stopPid sends SIGTERM to pid, then SIGKILL after grace, and waits until
// it is gone.
func stopPid(ctx context.Context, pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM to pid %d: %w", pid, err)
	}
	killAt := time.Now().Add(grace)
	for {
		if !running(pid) {
			return nil
		}
		if time.Now().After(killAt) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killAt = time.Now().Add(grace)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// running reports whether pid is a live process (not a zombie: a detached
// daemon's reaper may be slow or absent).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

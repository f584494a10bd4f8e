// Package ovsinstance runs a private Open vSwitch (ovsdb-server and
// ovs-vswitchd with the userspace datapath) for tests and the lab.
//
// Every file of an instance lives in one directory, Dir:
//
//	$Dir/conf.db                 the OVSDB database (created from vswitch.ovsschema)
//	$Dir/db.sock                 ovsdb-server's socket; DBEndpoint is "unix:$Dir/db.sock"
//	$Dir/ovsdb-server.pid        pidfile, ovsdb.log its log, ovsdb.ctl its unixctl socket
//	$Dir/vswitchd.pid            pidfile, vswitchd.log its log, vswitchd.ctl its unixctl socket
//	$Dir/<bridge>.mgmt           a bridge's OpenFlow management socket (ovs-vswitchd runs
//	                             with OVS_RUNDIR=$Dir); it exists only once the bridge does
//
// Start does not create any bridge: ovsconfig.EnsureBridge (or Vsctl) does.
// The helpers Ofctl, Vsctl and Appctl run the OVS command line tools against
// the instance; they talk over unix sockets and so work from any network
// namespace, while the daemons themselves run in Options.Netns when it is set.
//
// The package does not import testing so that the lab binary can use it.
package ovsinstance

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
)

// DefaultBridge is the bridge name used when Options.Bridge is empty.
const DefaultBridge = "br-int"

// schemaPath is where Debian's openvswitch-common installs the schema.
const schemaPath = "/usr/share/openvswitch/vswitch.ovsschema"

// commandTimeout bounds every helper command that has no deadline of its own.
const commandTimeout = 30 * time.Second

// Options configure an instance.
type Options struct {
	// Dir holds every file of the instance (created if missing). Unix
	// socket paths are limited to about 100 bytes, so keep it short.
	Dir string
	// Netns, when set, is a named network namespace (ip netns) the daemons
	// run in.
	Netns string
	// Bridge is the bridge the helpers address by default (DefaultBridge
	// when empty).
	Bridge string
}

// Instance is a running private OVS.
type Instance struct {
	Dir    string
	Netns  string
	Bridge string
	// DBSock is the path of ovsdb-server's socket; DBEndpoint is the same
	// as an OVSDB endpoint ("unix:" + DBSock) for libovsdb and ovs-vsctl.
	DBSock     string
	DBEndpoint string
	// MgmtSock is the OpenFlow management socket of Bridge.
	MgmtSock string
	// VswitchdCtl and OvsdbCtl are the daemons' unixctl sockets
	// (ovs-appctl -t).
	VswitchdCtl string
	OvsdbCtl    string
}

// Start creates $Dir/conf.db (or reuses it if it exists, which makes a
// Stop/Start pair a restart), starts ovsdb-server and ovs-vswitchd, and
// returns once both answer and ovs-vswitchd has applied the database.
// On failure it stops whatever it started.
func Start(ctx context.Context, o Options) (*Instance, error) {
	if o.Dir == "" {
		return nil, errors.New("ovsinstance: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("ovsinstance: %w", err)
	}
	bridge := o.Bridge
	if bridge == "" {
		bridge = DefaultBridge
	}
	i := &Instance{
		Dir:         dir,
		Netns:       o.Netns,
		Bridge:      bridge,
		DBSock:      filepath.Join(dir, "db.sock"),
		DBEndpoint:  "unix:" + filepath.Join(dir, "db.sock"),
		MgmtSock:    mgmtSock(dir, bridge),
		VswitchdCtl: filepath.Join(dir, "vswitchd.ctl"),
		OvsdbCtl:    filepath.Join(dir, "ovsdb.ctl"),
	}
	if n := len(i.MgmtSock); n > 100 {
		return nil, fmt.Errorf("ovsinstance: socket path %q is %d bytes, too long for a unix socket; use a shorter Dir", i.MgmtSock, n)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ovsinstance: %w", err)
	}
	if err := i.start(ctx); err != nil {
		_ = i.Stop()
		return nil, err
	}
	return i, nil
}

func mgmtSock(dir, bridge string) string { return filepath.Join(dir, bridge+".mgmt") }

func (i *Instance) start(ctx context.Context) error {
	db := i.path("conf.db")
	if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
		if _, err := run(ctx, nil, "", "ovsdb-tool", "create", db, schemaPath); err != nil {
			return fmt.Errorf("ovsinstance: create database: %w", err)
		}
	}
	if _, err := i.daemon(ctx, nil, "ovsdb-server",
		"--remote=punix:"+i.DBSock,
		"--pidfile="+i.path("ovsdb-server.pid"),
		"--detach",
		"--log-file="+i.path("ovsdb.log"),
		"--unixctl="+i.OvsdbCtl,
		db); err != nil {
		return fmt.Errorf("ovsinstance: start ovsdb-server: %w%s", err, i.logTail("ovsdb.log"))
	}
	if _, err := run(ctx, nil, "", "ovs-vsctl", "--db="+i.DBEndpoint, "--no-wait", "init"); err != nil {
		return fmt.Errorf("ovsinstance: initialize database: %w", err)
	}
	if _, err := i.daemon(ctx, []string{"OVS_RUNDIR=" + i.Dir}, "ovs-vswitchd",
		i.DBEndpoint,
		"--pidfile="+i.path("vswitchd.pid"),
		"--detach",
		"--log-file="+i.path("vswitchd.log"),
		"--unixctl="+i.VswitchdCtl); err != nil {
		return fmt.Errorf("ovsinstance: start ovs-vswitchd: %w%s", err, i.logTail("vswitchd.log"))
	}
	// Without --no-wait, ovs-vsctl waits until ovs-vswitchd has applied the
	// configuration: then both daemons answer.
	if _, err := run(ctx, nil, "", "ovs-vsctl", "--db="+i.DBEndpoint, "--timeout=30", "init"); err != nil {
		return fmt.Errorf("ovsinstance: wait for ovs-vswitchd: %w%s", err, i.logTail("vswitchd.log"))
	}
	return nil
}

// daemon runs a detaching daemon, in the instance's netns if it has one.
func (i *Instance) daemon(ctx context.Context, env []string, name string, args ...string) (string, error) {
	if i.Netns != "" {
		args = append([]string{"netns", "exec", i.Netns, name}, args...)
		name = "ip"
	}
	return run(ctx, env, "", name, args...)
}

// Stop terminates both daemons through their pidfiles and waits until they
// are gone. It is idempotent and succeeds when the daemons are already dead.
func (i *Instance) Stop() error {
	var errs []error
	// vswitchd first: it would otherwise log reconnect attempts.
	for _, d := range []struct{ pidfile, comm string }{
		{"vswitchd.pid", "ovs-vswitchd"},
		{"ovsdb-server.pid", "ovsdb-server"},
	} {
		if err := stopDaemon(i.path(d.pidfile), d.comm); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Restart stops both daemons and starts them again on the same database.
func (i *Instance) Restart(ctx context.Context) error {
	if err := i.Stop(); err != nil {
		return err
	}
	return i.start(ctx)
}

func stopDaemon(pidfile, comm string) error {
	data, err := os.ReadFile(pidfile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ovsinstance: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("ovsinstance: bad pidfile %s: %q", pidfile, data)
	}
	if !alive(pid, comm) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	start := time.Now()
	killed := false
	for alive(pid, comm) {
		switch waited := time.Since(start); {
		case waited > 10*time.Second:
			return fmt.Errorf("ovsinstance: %s (pid %d) did not exit", comm, pid)
		case waited > 5*time.Second && !killed:
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.Remove(pidfile)
	return nil
}

// alive reports whether pid is a running (not zombie) process named comm.
func alive(pid int, comm string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Format: pid (comm) state ...
	s := string(stat)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open || close+2 >= len(s) {
		return false
	}
	if !strings.HasPrefix(comm, s[open+1:close]) { // the kernel truncates comm
		return false
	}
	state := s[close+2]
	return state != 'Z' && state != 'X'
}

// Vsctl runs ovs-vsctl against the instance's database.
func (i *Instance) Vsctl(args ...string) (string, error) {
	return i.tool("", "ovs-vsctl", append([]string{"--db=" + i.DBEndpoint}, args...)...)
}

// Appctl runs ovs-appctl against ovs-vswitchd.
func (i *Instance) Appctl(args ...string) (string, error) {
	return i.tool("", "ovs-appctl", append([]string{"-t", i.VswitchdCtl}, args...)...)
}

// Ofctl runs ovs-ofctl with OpenFlow 1.5 on the instance's Bridge. args are
// options, a command, and the command's arguments; the bridge's management
// socket is inserted after the command, so Ofctl("--names", "dump-flows")
// runs `ovs-ofctl -O OpenFlow15 --names dump-flows unix:$Dir/br-int.mgmt`.
func (i *Instance) Ofctl(args ...string) (string, error) {
	return i.OfctlBridge(i.Bridge, args...)
}

// OfctlBridge is Ofctl on another bridge of the instance.
func (i *Instance) OfctlBridge(bridge string, args ...string) (string, error) {
	return i.ofctl(bridge, "", args)
}

func (i *Instance) ofctl(bridge, stdin string, args []string) (string, error) {
	cmd := slices.IndexFunc(args, func(a string) bool { return !strings.HasPrefix(a, "-") })
	if cmd < 0 {
		return "", fmt.Errorf("ovsinstance: ovs-ofctl %q: no command", args)
	}
	full := append([]string{"-O", "OpenFlow15"}, args[:cmd+1]...)
	full = append(full, "unix:"+mgmtSock(i.Dir, bridge))
	full = append(full, args[cmd+1:]...)
	return i.tool(stdin, "ovs-ofctl", full...)
}

// AddFlows installs flows (ovs-ofctl text, one per element) on bridge in
// one bundle, as `ovs-ofctl --bundle add-flows` does.
func (i *Instance) AddFlows(bridge string, flows []string) error {
	_, err := i.ofctl(bridge, strings.Join(flows, "\n")+"\n", []string{"--bundle", "add-flows", "-"})
	return err
}

// DumpFlows returns the flows of bridge as `ovs-ofctl --no-stats --names
// dump-flows` prints them, one per element, sorted, without the reply
// header. filter is an optional ovs-ofctl flow filter such as "table=3".
func (i *Instance) DumpFlows(bridge string, filter ...string) ([]string, error) {
	out, err := i.OfctlBridge(bridge, append([]string{"--no-stats", "--names", "dump-flows"}, filter...)...)
	if err != nil {
		return nil, err
	}
	var flows []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "OFPST_FLOW") || strings.HasPrefix(l, "NXST_FLOW") {
			continue
		}
		flows = append(flows, l)
	}
	slices.Sort(flows)
	return flows, nil
}

func (i *Instance) tool(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return run(ctx, nil, stdin, name, args...)
}

func (i *Instance) path(name string) string { return filepath.Join(i.Dir, name) }

// logTail returns the last lines of a daemon log for error messages.
func (i *Instance) logTail(name string) string {
	data, err := os.ReadFile(i.path(name))
	if err != nil || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "\n" + name + ":\n" + strings.Join(lines, "\n")
}

// run executes a command and returns its standard output; the error quotes
// the command line and its standard error.
func run(ctx context.Context, env []string, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

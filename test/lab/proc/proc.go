// Package proc starts the lab's long-running processes detached from the
// caller (own session and process group, output to a log file) and records
// each in a pid file, so that another process can find and stop them later,
// even after the starter crashed.
//
// A pid file holds "<pid> <start time>"; the start time (from /proc) guards
// against signalling an unrelated process that reused the pid.
package proc

import (
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

// Spec describes a process to start.
type Spec struct {
	// Name identifies the process; it names the pid file.
	Name string
	// Tier orders shutdown: Stop stops higher tiers first.
	Tier int
	// Path and Args are the command (Args excludes the program name).
	Path string
	Args []string
	// Env is added to the caller's environment.
	Env []string
	// LogFile receives stdout and stderr.
	LogFile string
}

// Process is a started (or recorded) process.
type Process struct {
	Name    string
	Tier    int
	Pid     int
	LogFile string
	// start is the process's start time in clock ticks since boot.
	start uint64
	// exited is closed once a process this package started has exited
	// (nil for processes read from pid files).
	exited chan struct{}
}

// Start launches spec detached and writes its pid file into pidDir.
func Start(spec Spec, pidDir string) (*Process, error) {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/ ") {
		return nil, fmt.Errorf("invalid process name %q", spec.Name)
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(pidDir, 0o755); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Process{Name: spec.Name, Tier: spec.Tier, Pid: cmd.Process.Pid, LogFile: spec.LogFile, exited: make(chan struct{})}
	// Reap the child so that an early exit is visible (no zombie).
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	p.start, err = startTime(p.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s exited immediately; see %s", spec.Name, spec.LogFile)
	}
	line := fmt.Sprintf("%d %d %s\n", p.Pid, p.start, spec.LogFile)
	if err := os.WriteFile(pidFile(pidDir, spec.Tier, spec.Name), []byte(line), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	return p, nil
}

func pidFile(dir string, tier int, name string) string {
	return filepath.Join(dir, fmt.Sprintf("%d-%s.pid", tier, name))
}

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
		}
	}
	st, err := startTime(p.Pid)
	return err == nil && st == p.start
}

// Read returns the processes recorded in pidDir, highest tier first. A
// missing directory yields none.
func Read(pidDir string) ([]*Process, error) {
	entries, err := os.ReadDir(pidDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ps []*Process
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".pid")
		tierStr, name, ok2 := strings.Cut(base, "-")
		tier, err := strconv.Atoi(tierStr)
		if !ok || !ok2 || err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(pidDir, e.Name()))
		if err != nil {
			return nil, err
		}
		p, err := parsePidFile(string(data))
		if err != nil {
			return nil, fmt.Errorf("pid file %s: %w", e.Name(), err)
		}
		p.Name, p.Tier = name, tier
		ps = append(ps, p)
	}
	slices.SortStableFunc(ps, func(a, b *Process) int { return b.Tier - a.Tier })
	return ps, nil
}

func parsePidFile(s string) (*Process, error) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return nil, fmt.Errorf("malformed content %q", s)
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 0 {
		return nil, fmt.Errorf("malformed content %q", s)
	}
	p := &Process{Pid: pid, start: start}
	if len(f) > 2 {
		p.LogFile = f[2]
	}
	return p, nil
}

// Stop sends SIGTERM to the process group, waits up to grace, then sends
// SIGKILL and waits for the process to disappear. A process that is already
// gone is not an error.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	signal(p.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	killed := false
	for p.Alive() {
		if !killed && time.Now().After(deadline) {
			signal(p.Pid, syscall.SIGKILL)
			killed = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.Pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// signal signals the process group (the process leads its own session) and
// the process itself, in case it left the group.
func signal(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(pid, sig)
}

// StopAll stops processes tier by tier, highest first; the processes of a
// tier are stopped concurrently.
func StopAll(ctx context.Context, ps []*Process, grace time.Duration) error {
	sorted := slices.Clone(ps)
	slices.SortStableFunc(sorted, func(a, b *Process) int { return b.Tier - a.Tier })
	var errs []error
	for len(sorted) > 0 {
		tier := sorted[0].Tier
		n := 1
		for n < len(sorted) && sorted[n].Tier == tier {
			n++
		}
		errc := make(chan error, n)
		for _, p := range sorted[:n] {
			go func() { errc <- p.Stop(ctx, grace) }()
		}
		for range n {
			if err := <-errc; err != nil {
				errs = append(errs, err)
			}
		}
		sorted = sorted[n:]
	}
	return errors.Join(errs...)
}

// startTime reads field 22 of /proc/<pid>/stat; zombies count as gone.
func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStat(string(data))
}

func parseStat(s string) (uint64, error) {
	// "pid (comm) state ppid ..." where comm may contain spaces and parens.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); the start time is field 22.
	if len(f) < 20 {
		return 0, errors.New("malformed stat")
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("process exited")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

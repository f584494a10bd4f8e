package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestReadDaemon(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "d.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid, argv, env, err := readDaemon(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() || !slices.Equal(argv, os.Args) {
		t.Errorf("readDaemon = %d %q, want %d %q", pid, argv, os.Getpid(), os.Args)
	}
	// /proc/<pid>/environ is the environment the process started with.
	if len(env) == 0 {
		t.Error("readDaemon returned no environment")
	}

	for name, content := range map[string]string{"garbage": "x\n", "no process": "999999999\n"} {
		bad := filepath.Join(dir, name)
		if err := os.WriteFile(bad, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := readDaemon(bad); err == nil {
			t.Errorf("readDaemon(%s) succeeded", name)
		}
	}
	if _, _, _, err := readDaemon(filepath.Join(dir, "missing")); err == nil {
		t.Error("readDaemon of a missing pidfile succeeded")
	}
}

func TestStopPid(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shell string
	}{
		{"exits on SIGTERM", "sleep 30"},
		{"ignores SIGTERM", "trap '' TERM; while :; do sleep 0.05; done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", tc.shell)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(waited) }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-waited })
			time.Sleep(100 * time.Millisecond) // let the shell set its trap
			if !running(cmd.Process.Pid) {
				t.Fatal("running() is false for a live process")
			}
			if err := stopPid(context.Background(), cmd.Process.Pid, 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			if running(cmd.Process.Pid) {
				t.Error("the process still runs after stopPid")
			}
		})
	}
}

package proc

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		stat    string
		want    uint64
		wantErr bool
	}{
		{"42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 12345 8000 100", 12345, false},
		{"42 (a (weird) name) R 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 777 8000 100", 777, false},
		{"42 (dead) Z 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 777 8000 100", 0, true},
		{"garbage", 0, true},
	}
	for _, tc := range tests {
		got, err := parseStat(tc.stat)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStat(%q) = %d, %v; want %d, err=%v", tc.stat, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParsePidFile(t *testing.T) {
	p, err := parsePidFile("123 456 /x/y.log\n")
	if err != nil || p.Pid != 123 || p.start != 456 || p.LogFile != "/x/y.log" {
		t.Errorf("parsePidFile = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "123", "x 1", "0 1", "-4 1"} {
		if _, err := parsePidFile(bad); err == nil {
			t.Errorf("parsePidFile(%q) succeeded, want an error", bad)
		}
	}
}

// TestStartReadStop starts real (unprivileged) processes, finds them again
// through their pid files and stops them in tier order.
func TestStartReadStop(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	var started []*Process
	for i, name := range []string{"low", "high"} {
		p, err := Start(Spec{Name: name, Tier: i + 1, Path: "sleep", Args: []string{"60"}, LogFile: filepath.Join(dir, name+".log")}, pids)
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
		started = append(started, p)
		t.Cleanup(func() { _ = p.Stop(context.Background(), time.Second) })
	}
	recorded, err := Read(pids)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(recorded) != 2 || recorded[0].Name != "high" || recorded[1].Name != "low" {
		t.Fatalf("Read = %v, want [high low]", recorded)
	}
	for _, p := range recorded {
		if !p.Alive() {
			t.Errorf("%s not alive", p.Name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := StopAll(ctx, recorded, time.Second); err != nil {
		t.Fatalf("StopAll: %v", err)
	}
	for _, p := range started {
		if p.Alive() {
			t.Errorf("%s still alive after StopAll", p.Name)
		}
	}
}

func TestStartMissingBinary(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(Spec{Name: "x", Path: filepath.Join(dir, "nope"), LogFile: filepath.Join(dir, "x.log")}, dir)
	if err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

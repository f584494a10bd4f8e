package openflow

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriteDeadlineDoesNotOutliveTheWrite: a request's deadline must not
// stay on the socket, or the reader's later replies to OVS's keepalive
// probes fail once it passed and OVS drops the connection.
func TestWriteDeadlineDoesNotOutliveTheWrite(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	defer theirs.Close()
	go func() { _, _ = io.Copy(io.Discard, theirs) }()
	cn := &conn{nc: ours}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := cn.sendRaw(ctx, []byte("request")); err != nil {
		t.Fatalf("sendRaw: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the request's deadline passes
	if err := cn.writeBytes(time.Time{}, []byte("echo reply")); err != nil {
		t.Fatalf("a write after an earlier request's deadline passed failed: %v", err)
	}
	if err := cn.writeBytes(time.Now().Add(-time.Second), []byte("late")); err == nil {
		t.Fatal("a write with a deadline in the past succeeded")
	}
}

package openflow

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"antrea.io/libOpenflow/common"
	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
)

// handshakeTimeout bounds the OpenFlow hello exchange.
const handshakeTimeout = 5 * time.Second

// OpenFlow message types this connection reads.
const (
	typeHello       = 0
	typeError       = 1
	typeEchoRequest = 2
	typeMultipart   = 19 // OFPT_MULTIPART_REPLY
	typeBundleCtrl  = 33
	headerLen       = 8
)

// reply is an error or a bundle control reply from OVS.
type reply struct {
	xid      uint32
	err      *ofError // set for OFPT_ERROR
	bundleID uint32   // set for OFPT_BUNDLE_CONTROL
	ctrlType uint16
	// multipart is the whole message of an OFPT_MULTIPART_REPLY.
	multipart []byte
}

// conn is one OpenFlow 1.5 connection. A single goroutine reads it,
// answers echo requests and passes errors and bundle replies on, in order.
type conn struct {
	nc  net.Conn
	wmu sync.Mutex // guards writes (the reader writes echo replies)

	qmu     sync.Mutex
	queue   []reply       // replies not yet received, in arrival order
	arrived chan struct{} // signalled after a reply is queued

	done    chan struct{} // closed when the reader stopped
	readErr error         // why the reader stopped; read after done
	xid     uint32        // last xid used; only the Client's goroutine uses it
}

// dial connects to the Unix socket path and negotiates OpenFlow 1.5.
func dial(ctx context.Context, path string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	cn := &conn{nc: nc, arrived: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cn.handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("OpenFlow handshake on %s: %w", path, err)
	}
	go cn.read()
	return cn, nil
}

func (cn *conn) handshake() error {
	deadline := time.Now().Add(handshakeTimeout)
	if err := cn.nc.SetReadDeadline(deadline); err != nil {
		return err
	}
	hello, err := common.NewHello(openflow15.VERSION)
	if err != nil {
		return err
	}
	if err := cn.write(deadline, hello); err != nil {
		return err
	}
	msg, err := readMessage(cn.nc)
	if err != nil {
		return err
	}
	switch {
	case msg[1] == typeError:
		return fmt.Errorf("switch refused the connection: %s (does the bridge allow OpenFlow15?)", parseError(msg))
	case msg[1] != typeHello:
		return fmt.Errorf("switch sent message type %d instead of hello", msg[1])
	case msg[0] < openflow15.VERSION:
		return fmt.Errorf("switch speaks OpenFlow version %d, want %d (OpenFlow15)", msg[0], openflow15.VERSION)
	}
	return cn.nc.SetReadDeadline(time.Time{})
}

// read runs until the connection fails or is closed.
func (cn *conn) read() {
	defer close(cn.done)
	r := bufio.NewReader(cn.nc)
	for {
		msg, err := readMessage(r)
		if err != nil {
			cn.readErr = err
			return
		}
		xid := binary.BigEndian.Uint32(msg[4:8])
		var rp reply
		switch msg[1] {
		case typeEchoRequest:
			echo := openflow15.NewEchoReply()
			echo.Xid = xid
			if err := cn.write(time.Now().Add(echoReplyTimeout), echoWithBody{echo, msg[headerLen:]}); err != nil {
				// A reply cut short leaves the stream corrupt, and OVS
				// drops a connection that does not answer: end it now,
				// so the client reconnects at once.
				cn.readErr = fmt.Errorf("answering the switch's echo request: %w", err)
				cn.nc.Close()
				return
			}
			continue
		case typeError:
			rp = reply{xid: xid, err: parseError(msg)}
		case typeBundleCtrl:
			if len(msg) < 14 {
				continue
			}
			rp = reply{xid: xid, bundleID: binary.BigEndian.Uint32(msg[8:12]), ctrlType: binary.BigEndian.Uint16(msg[12:14])}
		case typeMultipart:
			rp = reply{xid: xid, multipart: msg}
		default:
			continue // port status and other asynchronous messages
		}
		cn.qmu.Lock()
		cn.queue = append(cn.queue, rp)
		cn.qmu.Unlock()
		select {
		case cn.arrived <- struct{}{}:
		default:
		}
	}
}

// readMessage reads one OpenFlow message.
func readMessage(r io.Reader) ([]byte, error) {
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[2:4]))
	if n < headerLen {
		return nil, fmt.Errorf("bad OpenFlow message length %d", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr)
	if _, err := io.ReadFull(r, msg[headerLen:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// parseError decodes an OFPT_ERROR message, including experimenter errors.
func parseError(msg []byte) *ofError {
	if len(msg) < 12 {
		return &ofError{typ: 0xffff, code: 0xffff}
	}
	e := &ofError{typ: binary.BigEndian.Uint16(msg[8:10]), code: binary.BigEndian.Uint16(msg[10:12])}
	if e.typ == openflow15.ET_EXPERIMENTER && len(msg) >= 16 {
		e.experimenter = binary.BigEndian.Uint32(msg[12:16])
	}
	return e
}

// echoWithBody is an echo reply carrying the request's payload.
type echoWithBody struct {
	*common.Header
	body []byte
}

func (e echoWithBody) MarshalBinary() ([]byte, error) {
	e.Length = uint16(headerLen + len(e.body))
	h, err := e.Header.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return append(h, e.body...), nil
}

func (cn *conn) nextXid() uint32 {
	cn.xid++
	return cn.xid
}

// echoReplyTimeout bounds the write of a reply to OVS's keepalive probe.
const echoReplyTimeout = 5 * time.Second

// write marshals messages and writes them as one buffer, giving up at
// deadline (zero: never).
func (cn *conn) write(deadline time.Time, msgs ...interface{ MarshalBinary() ([]byte, error) }) error {
	var buf []byte
	for _, m := range msgs {
		b, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("encode OpenFlow message: %w", err)
		}
		buf = append(buf, b...)
	}
	return cn.writeBytes(deadline, buf)
}

// writeBytes writes b, giving up at deadline (zero: never). The deadline
// holds for this write only: a deadline left on the socket would fail every
// later write once it passed — the reader's replies to OVS's keepalive
// probes included, and OVS drops a connection that stops answering them.
func (cn *conn) writeBytes(deadline time.Time, b []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	if err := cn.nc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := cn.nc.Write(b)
	if !deadline.IsZero() {
		if cerr := cn.nc.SetWriteDeadline(time.Time{}); err == nil {
			err = cerr
		}
	}
	return err
}

// send writes msgs, giving up when ctx ends.
func (cn *conn) send(ctx context.Context, msgs ...util.Message) error {
	deadline, _ := ctx.Deadline()
	ms := make([]interface{ MarshalBinary() ([]byte, error) }, len(msgs))
	for i, m := range msgs {
		ms[i] = m
	}
	if err := cn.write(deadline, ms...); err != nil {
		return fmt.Errorf("openflow: send to switch: %w", err)
	}
	return nil
}

// sendRaw writes already encoded messages, giving up when ctx ends.
func (cn *conn) sendRaw(ctx context.Context, b []byte) error {
	deadline, _ := ctx.Deadline()
	if err := cn.writeBytes(deadline, b); err != nil {
		return fmt.Errorf("openflow: send to switch: %w", err)
	}
	return nil
}

// receive returns the next reply, or an error when ctx ends or the
// connection fails.
func (cn *conn) receive(ctx context.Context) (reply, error) {
	for {
		cn.qmu.Lock()
		if len(cn.queue) > 0 {
			r := cn.queue[0]
			cn.queue = cn.queue[1:]
			cn.qmu.Unlock()
			return r, nil
		}
		cn.qmu.Unlock()
		select {
		case <-cn.arrived:
		case <-cn.done:
			cn.qmu.Lock()
			pending := len(cn.queue)
			cn.qmu.Unlock()
			if pending == 0 { // replies read before the failure still count
				return reply{}, fmt.Errorf("openflow: connection to switch lost: %v", cn.readErr)
			}
		case <-ctx.Done():
			return reply{}, fmt.Errorf("openflow: waiting for the switch: %w", ctx.Err())
		}
	}
}

// drain drops replies left over from an earlier, abandoned exchange.
func (cn *conn) drain() {
	cn.qmu.Lock()
	defer cn.qmu.Unlock()
	cn.queue = nil
}

func (cn *conn) alive() bool {
	select {
	case <-cn.done:
		return false
	default:
		return true
	}
}

func (cn *conn) close() { cn.nc.Close() }

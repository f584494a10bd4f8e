package openflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/ofnet/ofctrl"
	"k8s.io/klog/v2"
)

const (
	// retryInterval is how often Connect and Apply retry dialing the bridge.
	retryInterval = 100 * time.Millisecond
	// replyTimeout bounds the wait for a bundle reply when ctx has no
	// earlier deadline.
	replyTimeout = 30 * time.Second
	// maxReported bounds how many rejected flows an Apply error lists.
	maxReported = 5
)

// Client installs flows on one bridge over its OpenFlow management socket.
//
// It speaks OpenFlow 1.5 bundles itself (messages built with libOpenflow)
// on one connection read by one goroutine, so OVS's replies are seen in the
// order OVS sent them: an error for any flow in a bundle always arrives
// before the reply that closes the bundle, and Apply discards the bundle
// instead of committing the rest. (ofnet's Transaction cannot promise this:
// its parser handles messages in parallel, so a flow's error may be seen
// only after the commit.)
type Client struct {
	sock string

	mu       sync.Mutex // serializes Connect, Apply and Close
	conn     *conn      // nil until connected and after a connection failed
	closed   bool
	bundleID uint32
	// gen counts successful dials, so Watch sees every new connection,
	// including one Apply made.
	gen uint64
}

// NewClient returns a client for the bridge whose management socket is
// mgmtSocket (e.g. $OVS_RUNDIR/br-int.mgmt). It does not connect yet.
func NewClient(mgmtSocket string) *Client {
	return &Client{sock: mgmtSocket}
}

// Connect connects to the bridge, retrying until it succeeds or ctx ends.
// Apply reconnects by itself whenever the connection was lost.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.connection(ctx)
	return err
}

// Close disconnects from the bridge; OVS discards any open bundle. Apply
// fails after Close.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		c.conn.close()
		c.conn = nil
	}
}

// connection returns the live connection, dialing until ctx ends.
func (c *Client) connection(ctx context.Context) (*conn, error) {
	if c.closed {
		return nil, errors.New("openflow: client is closed")
	}
	if c.conn != nil && c.conn.alive() {
		return c.conn, nil
	}
	c.conn = nil
	var lastErr error
	for {
		cn, err := dial(ctx, c.sock)
		if err == nil {
			klog.FromContext(ctx).V(2).Info("Connected to OpenFlow switch", "socket", c.sock)
			c.conn = cn
			c.gen++
			return cn, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("openflow: connect to %s: %w (last error: %v)", c.sock, ctx.Err(), lastErr)
		case <-time.After(retryInterval):
		}
	}
}

// Watch keeps the connection to the bridge up until ctx ends. A new
// connection after the first one means ovs-vswitchd may have restarted and
// lost every flow, so Watch then calls onReconnect, which should install the
// complete flow state again (in one bundle). Call Watch after Connect.
func (c *Client) Watch(ctx context.Context, onReconnect func(context.Context)) {
	c.mu.Lock()
	seen := c.gen // the connection the caller installed its flows through
	c.mu.Unlock()
	for {
		c.mu.Lock()
		cn, err := c.connection(ctx)
		gen := c.gen
		c.mu.Unlock()
		if err != nil {
			return // ctx ended or the client was closed
		}
		if gen != seen {
			klog.FromContext(ctx).Info("Reconnected to the OpenFlow switch; restoring flows", "socket", c.sock)
			onReconnect(ctx)
		}
		seen = gen
		select {
		case <-ctx.Done():
			return
		case <-cn.done:
		}
	}
}

// Apply sends ch to OVS as one atomic OpenFlow 1.5 bundle: first (with
// ReplaceAll) a delete of all flows, then the deletes, the modifications,
// and the additions. If OVS rejects any message the bundle is discarded,
// nothing changes, and the error names the rejected flows and OVS's error.
// Modify replaces a flow's actions and keeps its cookie (OpenFlow 1.5
// semantics); to change a cookie, Add the flow again.
//
// The messages are encoded while OVS decodes the ones sent before. A flow
// that cannot be encoded fails Apply: before connecting if it is among the
// first chunkSize bytes, else by discarding the bundle.
func (c *Client) Apply(ctx context.Context, ch Changes) error {
	if ch.ReplaceAll && (len(ch.Modify) > 0 || len(ch.Delete) > 0) {
		return errors.New("openflow: ReplaceAll takes only Add flows")
	}
	n := countMods(ch)
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bundleID++
	id := c.bundleID
	chunks := make(chan encodedChunk, 4)
	stop := make(chan struct{})
	defer close(stop)
	go encodeBundle(ch, id, chunks, stop)
	first := <-chunks
	if first.err != nil {
		return first.err
	}
	cn, err := c.connection(ctx)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, replyTimeout)
		defer cancel()
	}
	describe := func(i int) string { return describeMod(ch, i) }
	if err := cn.applyBundle(ctx, id, n, first.data, chunks, describe); err != nil {
		var rejected *rejectedError
		var encoding *encodeError
		if !errors.As(err, &rejected) && !errors.As(err, &encoding) {
			// The connection is in an unknown state: drop it, which makes
			// OVS discard the bundle.
			cn.close()
			c.conn = nil
		}
		return err
	}
	klog.FromContext(ctx).V(4).Info("Applied flow changes", "add", len(ch.Add), "modify", len(ch.Modify),
		"delete", len(ch.Delete), "replaceAll", ch.ReplaceAll)
	return nil
}

// bundleFlags are the flags of every bundle Apply sends.
const bundleFlags = openflow15.OFPBCT_ATOMIC | openflow15.OFPBCT_ORDERED

// bundleStep is one kind of change, in bundle order.
type bundleStep struct {
	verb    string
	command uint8
	flows   []Flow
}

func bundleSteps(ch Changes) []bundleStep {
	return []bundleStep{
		{"delete", openflow15.FC_DELETE_STRICT, ch.Delete},
		{"modify", openflow15.FC_MODIFY_STRICT, ch.Modify},
		{"add", openflow15.FC_ADD, ch.Add},
	}
}

// countMods is how many flow_mods forEachMod makes of ch.
func countMods(ch Changes) int {
	n := len(ch.Delete) + len(ch.Modify) + len(ch.Add)
	if ch.ReplaceAll {
		n++
	}
	return n
}

// forEachMod translates ch into flow_mods and calls fn with each, in bundle
// order. It stops at the first error, fn's or a flow's.
func forEachMod(ch Changes, fn func(*openflow15.FlowMod) error) error {
	if ch.ReplaceAll {
		all := openflow15.NewFlowMod()
		all.Command = openflow15.FC_DELETE
		all.TableId = openflow15.OFPTT_ALL
		if err := fn(all); err != nil {
			return err
		}
	}
	for _, step := range bundleSteps(ch) {
		for _, f := range step.flows {
			fm, err := flowMod(f, step.command)
			if err != nil {
				return fmt.Errorf("openflow: %s %s: %w", step.verb, f, err)
			}
			if err := fn(fm); err != nil {
				return err
			}
		}
	}
	return nil
}

// describeMod describes the i-th flow_mod forEachMod makes of ch, for
// errors (only rejected flows are ever rendered as text).
func describeMod(ch Changes, i int) string {
	if ch.ReplaceAll {
		if i == 0 {
			return "delete all flows"
		}
		i--
	}
	for _, step := range bundleSteps(ch) {
		if i < len(step.flows) {
			return step.verb + " " + step.flows[i].String()
		}
		i -= len(step.flows)
	}
	return fmt.Sprintf("message %d", i)
}

// chunkSize is about how many bytes of encoded messages Apply writes at
// once: OVS decodes a chunk while the next one is encoded.
const chunkSize = 256 << 10

// encodedChunk is bundle_add messages as encodeBundle sends them, or the
// error that ended the encoding.
type encodedChunk struct {
	data []byte
	err  error
}

// encodeError is a flow that could not be encoded; the bundle was
// discarded and the connection is still usable.
type encodeError struct{ err error }

func (e *encodeError) Error() string { return e.err.Error() }
func (e *encodeError) Unwrap() error { return e.err }

// errStopped ends encodeBundle when its reader went away.
var errStopped = errors.New("stopped")

// encodeBundle encodes ch's flow_mods as bundle_add messages of bundle id,
// the i-th with xid i (rebaseXids moves them to the connection's), in
// chunks of about chunkSize bytes sent on out, which it closes. It stops at
// the first error, sent as the last chunk, or when stop is closed.
func encodeBundle(ch Changes, id uint32, out chan<- encodedChunk, stop <-chan struct{}) {
	defer close(out)
	emit := func(c encodedChunk) bool {
		select {
		case out <- c:
			return true
		case <-stop:
			return false
		}
	}
	buf := make([]byte, 0, chunkSize+chunkSize/4)
	var xid uint32
	err := forEachMod(ch, func(fm *openflow15.FlowMod) error {
		var err error
		if buf, err = appendBundleAdd(buf, fm, id, bundleFlags, xid); err != nil {
			return fmt.Errorf("openflow: %s: %w", describeMod(ch, int(xid)), err)
		}
		xid++
		if len(buf) >= chunkSize {
			if !emit(encodedChunk{data: buf}) {
				return errStopped
			}
			buf = make([]byte, 0, chunkSize+chunkSize/4)
		}
		return nil
	})
	switch {
	case errors.Is(err, errStopped):
	case err != nil:
		emit(encodedChunk{err: err})
	case len(buf) > 0:
		emit(encodedChunk{data: buf})
	}
}

// rejectedError reports flows OVS refused; the bundle was discarded and
// the connection is still usable.
type rejectedError struct {
	total    int
	rejected []string // "flow: OVS error"
}

func (e *rejectedError) Error() string {
	lines := e.rejected
	if len(lines) > maxReported {
		lines = append(lines[:maxReported:maxReported], fmt.Sprintf("... and %d more", len(e.rejected)-maxReported))
	}
	return fmt.Sprintf("openflow: OVS rejected %d of %d flow changes, nothing was applied:\n\t%s",
		len(e.rejected), e.total, strings.Join(lines, "\n\t"))
}

// applyBundle opens bundle id, adds its n messages (first, then the
// chunks from rest), closes it, and commits it if OVS accepted every
// message; otherwise it discards it and returns a *rejectedError (an
// *encodeError if a chunk reports that a flow could not be encoded).
// describe(i) names the i-th message in errors.
func (cn *conn) applyBundle(ctx context.Context, id uint32, n int, first []byte, rest <-chan encodedChunk, describe func(int) string) error {
	cn.drain()
	openXid := cn.nextXid()
	firstAdd := cn.nextXid()
	cn.xid = firstAdd + uint32(n) - 1
	closeXid := cn.nextXid()
	if err := cn.send(ctx, bundleCtrl(id, openflow15.OFPBCT_OPEN_REQUEST, bundleFlags, openXid)); err != nil {
		return err
	}
	for data := first; len(data) > 0; {
		rebaseXids(data, firstAdd)
		if err := cn.sendRaw(ctx, data); err != nil {
			return err
		}
		var c encodedChunk
		select {
		case c = <-rest:
		case <-ctx.Done():
			return fmt.Errorf("openflow: encoding flows: %w", ctx.Err())
		}
		if c.err != nil {
			if err := cn.finish(ctx, id, openflow15.OFPBCT_DISCARD_REQUEST, openflow15.OFPBCT_DISCARD_REPLY); err != nil {
				return fmt.Errorf("openflow: discard bundle: %w", err)
			}
			return &encodeError{c.err}
		}
		data = c.data
	}
	if err := cn.send(ctx, bundleCtrl(id, openflow15.OFPBCT_CLOSE_REQUEST, bundleFlags, closeXid)); err != nil {
		return err
	}

	// OVS answers in order: errors for the open request or any added
	// message come before the close reply (or the close request's error).
	var rejected []string
	for {
		r, err := cn.receive(ctx)
		if err != nil {
			return err
		}
		switch {
		case r.err != nil && r.xid == openXid:
			return fmt.Errorf("openflow: OVS refused to open a bundle: %s", r.err)
		case r.err != nil && r.xid >= firstAdd && r.xid < firstAdd+uint32(n):
			rejected = append(rejected, fmt.Sprintf("%s: %s", describe(int(r.xid-firstAdd)), r.err))
			continue
		case r.err != nil && r.xid == closeXid:
			rejected = append(rejected, fmt.Sprintf("closing the bundle: %s", r.err))
		case r.bundleID == id && r.ctrlType == openflow15.OFPBCT_CLOSE_REPLY:
		default:
			continue // a reply to something earlier
		}
		break
	}
	if len(rejected) > 0 {
		if err := cn.finish(ctx, id, openflow15.OFPBCT_DISCARD_REQUEST, openflow15.OFPBCT_DISCARD_REPLY); err != nil {
			return fmt.Errorf("openflow: discard rejected bundle: %w", err)
		}
		return &rejectedError{total: n, rejected: rejected}
	}
	if err := cn.finish(ctx, id, openflow15.OFPBCT_COMMIT_REQUEST, openflow15.OFPBCT_COMMIT_REPLY); err != nil {
		return fmt.Errorf("openflow: OVS refused to commit the bundle, nothing was applied: %w", err)
	}
	return nil
}

// finish sends a commit or discard request and waits for its reply.
func (cn *conn) finish(ctx context.Context, id uint32, request, reply uint16) error {
	xid := cn.nextXid()
	if err := cn.send(ctx, bundleCtrl(id, request, openflow15.OFPBCT_ATOMIC|openflow15.OFPBCT_ORDERED, xid)); err != nil {
		return err
	}
	for {
		r, err := cn.receive(ctx)
		if err != nil {
			return err
		}
		switch {
		case r.err != nil && r.xid == xid:
			return r.err
		case r.bundleID == id && r.ctrlType == reply:
			return nil
		}
	}
}

func bundleCtrl(id uint32, typ, flags uint16, xid uint32) *openflow15.BundleCtrl {
	m := openflow15.NewBundleCtrl(id, typ, flags)
	m.Xid = xid
	return m
}

// ofError is an OpenFlow error reply, named as OVS names it.
type ofError struct {
	typ, code    uint16
	experimenter uint32
}

func (e *ofError) Error() string {
	return ofctrl.GetErrorMessage(e.typ, e.code, e.experimenter)
}

package openflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
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
func (c *Client) Apply(ctx context.Context, ch Changes) error {
	if ch.ReplaceAll && (len(ch.Modify) > 0 || len(ch.Delete) > 0) {
		return errors.New("openflow: ReplaceAll takes only Add flows")
	}
	mods, descs, err := buildMods(ch)
	if err != nil {
		return err
	}
	if len(mods) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cn, err := c.connection(ctx)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, replyTimeout)
		defer cancel()
	}
	c.bundleID++
	if err := cn.applyBundle(ctx, c.bundleID, mods, descs); err != nil {
		var rejected *rejectedError
		if !errors.As(err, &rejected) {
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

// buildMods translates ch into flow_mods in bundle order, with a
// description of each for errors.
func buildMods(ch Changes) ([]*openflow15.FlowMod, []string, error) {
	var mods []*openflow15.FlowMod
	var descs []string
	if ch.ReplaceAll {
		all := openflow15.NewFlowMod()
		all.Command = openflow15.FC_DELETE
		all.TableId = openflow15.OFPTT_ALL
		mods = append(mods, all)
		descs = append(descs, "delete all flows")
	}
	for _, step := range []struct {
		verb    string
		command uint8
		flows   []Flow
	}{
		{"delete", openflow15.FC_DELETE_STRICT, ch.Delete},
		{"modify", openflow15.FC_MODIFY_STRICT, ch.Modify},
		{"add", openflow15.FC_ADD, ch.Add},
	} {
		for _, f := range step.flows {
			fm, err := flowMod(f, step.command)
			if err != nil {
				return nil, nil, fmt.Errorf("openflow: %s %s: %w", step.verb, f, err)
			}
			mods = append(mods, fm)
			descs = append(descs, step.verb+" "+f.String())
		}
	}
	return mods, descs, nil
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

// applyBundle opens bundle id, adds mods, closes it, and commits it if OVS
// accepted every message; otherwise it discards it and returns a
// *rejectedError.
func (cn *conn) applyBundle(ctx context.Context, id uint32, mods []*openflow15.FlowMod, descs []string) error {
	const flags = openflow15.OFPBCT_ATOMIC | openflow15.OFPBCT_ORDERED
	cn.drain()
	openXid := cn.nextXid()
	msgs := []util.Message{bundleCtrl(id, openflow15.OFPBCT_OPEN_REQUEST, flags, openXid)}
	firstAdd := cn.nextXid()
	for i, fm := range mods {
		xid := firstAdd + uint32(i)
		fm.Xid = xid // a bundled message has the xid of its bundle_add
		add := openflow15.NewBndleAdd(id, flags)
		add.Xid = xid
		add.Message = fm
		msgs = append(msgs, add)
	}
	cn.xid = firstAdd + uint32(len(mods)) - 1
	closeXid := cn.nextXid()
	msgs = append(msgs, bundleCtrl(id, openflow15.OFPBCT_CLOSE_REQUEST, flags, closeXid))
	if err := cn.send(ctx, msgs...); err != nil {
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
		case r.err != nil && r.xid >= firstAdd && r.xid < firstAdd+uint32(len(mods)):
			rejected = append(rejected, fmt.Sprintf("%s: %s", descs[r.xid-firstAdd], r.err))
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
		return &rejectedError{total: len(mods), rejected: rejected}
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

package openflow

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"antrea.io/libOpenflow/openflow15"
)

// FlowStat is the counters of one flow entry.
type FlowStat struct {
	Table    uint8
	Priority uint16
	Cookie   uint64
	Packets  uint64
	Bytes    uint64
}

// AllTables selects every table in FlowStats.
const AllTables uint8 = openflow15.OFPTT_ALL

// FlowStats returns the counters of the flows in table (AllTables for
// every table) whose cookie matches cookie under cookieMask, as
// `ovs-ofctl dump-flows table=T cookie=C/M` selects them.
func (c *Client) FlowStats(ctx context.Context, table uint8, cookie, cookieMask uint64) ([]FlowStat, error) {
	return flowDesc(ctx, c, table, cookie, cookieMask, parseFlowDescReply)
}

// errStatsReply marks a reply OVS sent that could not be decoded.
var errStatsReply = errors.New("openflow: bad flow stats reply")

// flowDesc sends one OFPMP_FLOW_DESC request for the flows in table whose
// cookie matches cookie under cookieMask, and decodes each reply message
// with parse (which reports whether more messages follow).
func flowDesc[T any](ctx context.Context, c *Client, table uint8, cookie, cookieMask uint64,
	parse func(msg []byte) (more bool, items []T, err error)) ([]T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn, err := c.connection(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, replyTimeout)
		defer cancel()
	}
	items, err := flowDescExchange(ctx, cn, table, cookie, cookieMask, parse)
	if err != nil && !errors.Is(err, errStatsReply) {
		// Replies of an abandoned exchange would confuse the next one.
		cn.close()
		c.conn = nil
	}
	return items, err
}

func flowDescExchange[T any](ctx context.Context, cn *conn, table uint8, cookie, cookieMask uint64,
	parse func(msg []byte) (bool, []T, error)) ([]T, error) {
	cn.drain()
	req := openflow15.NewMpRequest(openflow15.MultipartType_FlowDesc)
	body := openflow15.NewFlowStatsRequest()
	body.TableId = table
	body.Cookie = cookie
	body.CookieMask = cookieMask
	req.Body = append(req.Body, body)
	req.Xid = cn.nextXid()
	if err := cn.send(ctx, req); err != nil {
		return nil, err
	}
	var out []T
	for {
		r, err := cn.receive(ctx)
		if err != nil {
			return nil, err
		}
		if r.xid != req.Xid {
			continue
		}
		if r.err != nil {
			return nil, fmt.Errorf("openflow: OVS refused the flow stats request: %w", r.err)
		}
		if r.multipart == nil {
			continue
		}
		more, items, err := parse(r.multipart)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if !more {
			return out, nil
		}
	}
}

// parseFlowDescReply decodes one OFPMP_FLOW_DESC reply message: whether
// more messages follow, and the counters of its flows.
func parseFlowDescReply(msg []byte) (bool, []FlowStat, error) {
	const mpHeader = headerLen + 8 // type, flags, pad
	if len(msg) < mpHeader {
		return false, nil, fmt.Errorf("%w: %d bytes", errStatsReply, len(msg))
	}
	if typ := binary.BigEndian.Uint16(msg[8:10]); typ != openflow15.MultipartType_FlowDesc {
		return false, nil, fmt.Errorf("%w: multipart type %d", errStatsReply, typ)
	}
	more := binary.BigEndian.Uint16(msg[10:12])&openflow15.OFPMPF_REPLY_MORE != 0
	var out []FlowStat
	for b := msg[mpHeader:]; len(b) > 0; {
		st, n, err := parseFlowDesc(b)
		if err != nil {
			return false, nil, err
		}
		out = append(out, st)
		b = b[n:]
	}
	return more, out, nil
}

// parseFlowDesc decodes one ofp_flow_desc: its fixed part (24 bytes, the
// cookie last), the match and the OXS statistics (each padded to 8 bytes);
// the instructions are skipped.
func parseFlowDesc(b []byte) (FlowStat, int, error) {
	if len(b) < 24 {
		return FlowStat{}, 0, fmt.Errorf("%w: flow entry of %d bytes", errStatsReply, len(b))
	}
	n := int(binary.BigEndian.Uint16(b[0:2]))
	if n < 24 || n > len(b) {
		return FlowStat{}, 0, fmt.Errorf("%w: flow entry length %d of %d", errStatsReply, n, len(b))
	}
	st := FlowStat{Table: b[4], Priority: binary.BigEndian.Uint16(b[6:8]), Cookie: binary.BigEndian.Uint64(b[16:24])}
	off := 24
	if off+4 > n {
		return FlowStat{}, 0, fmt.Errorf("%w: no match", errStatsReply)
	}
	off += pad8(int(binary.BigEndian.Uint16(b[off+2 : off+4])))
	if off+4 > n {
		return FlowStat{}, 0, fmt.Errorf("%w: no statistics", errStatsReply)
	}
	statsLen := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
	if statsLen < 4 || off+statsLen > n {
		return FlowStat{}, 0, fmt.Errorf("%w: statistics length %d", errStatsReply, statsLen)
	}
	for f := b[off+4 : off+statsLen]; len(f) >= 4; {
		field, length := f[2]>>1, int(f[3])
		if 4+length > len(f) {
			return FlowStat{}, 0, fmt.Errorf("%w: statistic of %d bytes", errStatsReply, length)
		}
		if length == 8 {
			v := binary.BigEndian.Uint64(f[4:12])
			switch field {
			case openflow15.XST_OFB_PACKET_COUNT:
				st.Packets = v
			case openflow15.XST_OFB_BYTE_COUNT:
				st.Bytes = v
			}
		}
		f = f[4+length:]
	}
	return st, n, nil
}

func pad8(n int) int { return (n + 7) / 8 * 8 }

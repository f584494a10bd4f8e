package openflow

import (
	"strings"
	"testing"

	"antrea.io/libOpenflow/openflow15"
	"antrea.io/libOpenflow/util"
	"github.com/google/go-cmp/cmp"
)

// flowDescReply encodes an OFPMP_FLOW_DESC reply as OVS sends it.
func flowDescReply(t *testing.T, more bool, stats ...FlowStat) []byte {
	t.Helper()
	reply := openflow15.NewMpReply(openflow15.MultipartType_FlowDesc)
	if more {
		reply.Flags = openflow15.OFPMPF_REPLY_MORE
	}
	for _, s := range stats {
		d := openflow15.NewFlowDesc()
		d.TableId, d.Priority, d.Cookie = s.Table, s.Priority, s.Cookie
		d.Match.AddField(*openflow15.NewEthTypeField(ethTypeIPv4))
		packets, bytes := openflow15.NewPacketCountStatField(), openflow15.NewByteCountStatField()
		packets.Count, bytes.Count = s.Packets, s.Bytes
		d.Stats.Fields = []util.Message{packets, bytes}
		d.Instructions = []openflow15.Instruction{openflow15.NewInstrGotoTable(s.Table + 1)}
		reply.Body = append(reply.Body, d)
	}
	b, err := reply.MarshalBinary()
	if err != nil {
		t.Fatalf("encoding the reply: %v", err)
	}
	return b
}

func TestParseFlowDescReply(t *testing.T) {
	want := []FlowStat{
		{Table: 7, Priority: 200, Cookie: 0x7000100000003, Packets: 12, Bytes: 3400},
		{Table: 7, Priority: 0, Cookie: 0x1000000000000, Packets: 1 << 40, Bytes: 1 << 50},
	}
	more, got, err := parseFlowDescReply(flowDescReply(t, true, want...))
	if err != nil {
		t.Fatalf("parseFlowDescReply: %v", err)
	}
	if !more {
		t.Error("the REPLY_MORE flag was lost")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseFlowDescReply (-want +got):\n%s", diff)
	}
	if more, got, err := parseFlowDescReply(flowDescReply(t, false)); err != nil || more || len(got) != 0 {
		t.Errorf("empty last reply: more=%v, %v, %v", more, got, err)
	}
}

func TestParseFlowDescReplyRejectsTruncated(t *testing.T) {
	full := flowDescReply(t, false, FlowStat{Table: 1, Priority: 2, Cookie: 3, Packets: 4, Bytes: 5})
	for n := 0; n < len(full); n++ {
		msg := append([]byte(nil), full[:n]...)
		if n >= 4 { // the header's length as OVS would have sent it
			msg[2], msg[3] = byte(n>>8), byte(n)
		}
		_, got, err := parseFlowDescReply(msg)
		if n <= headerLen+8 {
			continue // no entries yet (or no multipart header): nothing to check beyond not panicking
		}
		if err == nil || !strings.Contains(err.Error(), "bad flow stats reply") {
			t.Errorf("reply truncated to %d of %d bytes: %v, %v; want an error", n, len(full), got, err)
		}
	}
	other := append([]byte(nil), full...)
	other[9] = openflow15.MultipartType_Port
	if _, _, err := parseFlowDescReply(other); err == nil {
		t.Error("a port stats reply was accepted as flow stats")
	}
}

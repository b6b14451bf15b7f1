package wire

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var pingIDs = []uint64{0, 1, 127, 128, 300, 16383, 16384, 1 << 32, math.MaxInt64, math.MaxUint64}

// The fast path must agree with protobuf byte for byte: ParsePing accepts what proto.Marshal makes of
// a ping, and AppendPong makes what proto.Marshal makes of the pong.
func TestPingPongMatchProtobuf(t *testing.T) {
	for _, id := range pingIDs {
		ping, err := proto.Marshal(&chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: id}}})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := ParsePing(ping); !ok || got != id {
			t.Errorf("ParsePing(% x) = %d, %v; want %d, true", ping, got, ok, id)
		}
		pong, err := proto.Marshal(&chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: id}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendPong([]byte("x"), id); !bytes.Equal(got[1:], pong) || got[0] != 'x' {
			t.Errorf("AppendPong(%d) = % x; want x + % x", id, got, pong)
		}
	}
}

// What is not exactly a lone ping goes the general way.
func TestParsePingRefuses(t *testing.T) {
	pong, _ := proto.Marshal(&chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: 5}}})
	for name, b := range map[string][]byte{
		"empty":                 {},
		"pong":                  pong,
		"truncated":             {tagPing, 2, tagPingID},
		"length too long":       {tagPing, 3, tagPingID, 5},
		"trailing field":        {tagPing, 2, tagPingID, 5, 0x08, 1},
		"unknown field in ping": {tagPing, 4, tagPingID, 5, 0x10, 1},
		"explicit zero id":      {tagPing, 2, tagPingID, 0},
		"non-canonical varint":  {tagPing, 3, tagPingID, 0x85, 0x00},
		"overlong varint":       append([]byte{tagPing, 12, tagPingID}, bytes.Repeat([]byte{0xff}, 11)...),
	} {
		if id, ok := ParsePing(b); ok {
			t.Errorf("%s: ParsePing(% x) = %d, true; want false", name, b, id)
		}
	}
}

// FuzzParsePing: whenever ParsePing accepts bytes, protobuf reads the same ping from them.
func FuzzParsePing(f *testing.F) {
	for _, id := range pingIDs {
		b, _ := proto.Marshal(&chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: id}}})
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ok := ParsePing(b)
		if !ok {
			return
		}
		var env chatdpb.Envelope
		if err := DecodeEnvelope(b, &env); err != nil || env.GetPing() == nil || env.GetPing().GetId() != id {
			t.Fatalf("ParsePing(% x) = %d; protobuf: %v, %v", b, id, &env, err)
		}
		again, _ := proto.Marshal(&env)
		if !bytes.Equal(again, b) {
			t.Fatalf("ParsePing accepted a non-canonical encoding % x (canonical % x)", b, again)
		}
	})
}

func BenchmarkPingPong(b *testing.B) {
	ping, _ := proto.Marshal(&chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 123456}}})
	b.Run("fast", func(b *testing.B) {
		var out []byte
		for b.Loop() {
			id, _ := ParsePing(ping)
			out = AppendPong(out[:0], id)
		}
	})
	b.Run("protobuf", func(b *testing.B) {
		var out []byte
		env := new(chatdpb.Envelope)
		for b.Loop() {
			_ = DecodeEnvelope(ping, env)
			out, _ = AppendEnvelope(out[:0], &chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: env.GetPing().GetId()}}})
		}
	})
}

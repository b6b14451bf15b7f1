package wire_test

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// loopReader serves the same stream of frames forever.
type loopReader struct {
	stream []byte
	off    int
}

func (r *loopReader) Read(p []byte) (int, error) {
	if r.off == len(r.stream) {
		r.off = 0
	}
	n := copy(p, r.stream[r.off:])
	r.off += n
	return n, nil
}

func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{16, 216, 4096, wire.MaxFrame} {
		b.Run(fmt.Sprintf("payload=%d", size), func(b *testing.B) {
			var stream []byte
			for len(stream) < 1<<20 || len(stream) == 0 {
				stream, _ = wire.AppendFrame(stream, pattern(size))
			}
			fr := wire.NewReader(&loopReader{stream: stream}, wire.MaxFrame)
			b.SetBytes(int64(wire.HeaderLen + size))
			b.ReportAllocs()
			for b.Loop() {
				p, err := fr.ReadFrame()
				if err != nil || len(p) != size {
					b.Fatalf("%d bytes, %v", len(p), err)
				}
			}
		})
	}
}

func BenchmarkEnvelope(b *testing.B) {
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
		ClientId: "c-0001-6b1d2f", To: "4915187654321",
		Content: &chatdpb.Content{Version: 1, Body: bytes.Repeat([]byte("x"), 150)},
	}}}
	enc, _ := wire.AppendEnvelope(nil, env)
	b.Run("append", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf, _ = wire.AppendEnvelope(buf[:0], env)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		b.ReportAllocs()
		out := new(chatdpb.Envelope)
		for b.Loop() {
			if err := wire.DecodeEnvelope(enc, out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var _ io.Reader = (*loopReader)(nil)

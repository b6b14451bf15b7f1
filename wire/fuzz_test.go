package wire_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from sampleEnvelopes")

// FuzzDecode feeds arbitrary bytes, as a chat stream, to a frame Reader and decodes every frame it
// yields as an envelope. Besides never panicking it checks the Reader against a model of the frame
// format: it never hands out more than the limit, never reads past a rejected header, and reports
// truncation and EOF exactly where the model says.
func FuzzDecode(f *testing.F) {
	// The committed corpus in testdata/fuzz/FuzzDecode holds the real frames; a few inline seeds
	// keep the target meaningful when the corpus directory is missing.
	f.Add([]byte{})
	f.Add([]byte(wire.Preamble))
	f.Add([]byte{0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		// A stream may start with the preamble, as on the server; then frames follow.
		stream := data
		if wire.CheckPreamble(data) == nil {
			if !wire.LooksLikePreamble(data) {
				t.Fatalf("CheckPreamble accepts %q but LooksLikePreamble does not", data[:4])
			}
			stream = data[len(wire.Preamble):]
		}
		src := bytes.NewReader(stream)
		fr := wire.NewReader(src, wire.MaxFrame)
		env := new(chatdpb.Envelope)
		pos := 0 // the model's position in stream
		for {
			p, err := fr.ReadFrame()
			rest := len(stream) - pos
			switch {
			case rest == 0:
				if err != io.EOF {
					t.Fatalf("at the end of the stream: %v, want io.EOF", err)
				}
				return
			case rest < wire.HeaderLen:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("%d header bytes left: %v, want io.ErrUnexpectedEOF", rest, err)
				}
				return
			}
			h := stream[pos:]
			n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
			switch {
			case n > wire.MaxFrame:
				var tl *wire.FrameTooLargeError
				if !errors.As(err, &tl) || tl.Size != n || tl.Max != wire.MaxFrame {
					t.Fatalf("header announcing %d: %v, want *FrameTooLargeError", n, err)
				}
				if unread := src.Len(); unread != rest-wire.HeaderLen {
					t.Fatalf("after rejecting a %d-byte header the reader consumed %d payload bytes", n, rest-wire.HeaderLen-unread)
				}
				return
			case rest-wire.HeaderLen < n:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("frame of %d with %d bytes left: %v, want io.ErrUnexpectedEOF", n, rest-wire.HeaderLen, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("complete %d-byte frame: %v", n, err)
			}
			if len(p) != n || cap(p) > max(wire.MaxFrame, 64) {
				t.Fatalf("frame of %d: got len %d cap %d", n, len(p), cap(p))
			}
			if !bytes.Equal(p, stream[pos+wire.HeaderLen:pos+wire.HeaderLen+n]) {
				t.Fatalf("frame of %d: payload differs from the stream", n)
			}
			pos += wire.HeaderLen + n

			checkEnvelope(t, p, env)
		}
	})
}

// checkEnvelope decodes p; when that succeeds the envelope must survive a re-encode.
func checkEnvelope(t *testing.T, p []byte, env *chatdpb.Envelope) {
	t.Helper()
	if err := wire.DecodeEnvelope(p, env); err != nil {
		if !errors.Is(err, wire.ErrBadEnvelope) {
			t.Fatalf("DecodeEnvelope error %v does not match ErrBadEnvelope", err)
		}
		return
	}
	if env.Body == nil {
		t.Fatal("DecodeEnvelope succeeded without a body")
	}
	b, err := wire.AppendEnvelope(nil, env)
	if err != nil {
		// Re-encoding can grow (a 5-byte negative enum becomes 10 bytes), so only the limit may fail.
		if !errors.Is(err, wire.ErrFrameTooLarge) {
			t.Fatalf("re-encoding a decoded envelope: %v", err)
		}
		return
	}
	again := new(chatdpb.Envelope)
	if err := wire.DecodeEnvelope(b, again); err != nil {
		t.Fatalf("a re-encoded envelope does not decode: %v", err)
	}
	if !proto.Equal(env, again) {
		t.Fatalf("re-encoding changed the envelope:\n%v\n%v", env, again)
	}
}

// fuzzDecodeSeeds builds the committed seed corpus from real frames.
func fuzzDecodeSeeds(t *testing.T) map[string][]byte {
	seeds := map[string][]byte{}
	var all []byte // every envelope frame on one stream
	for _, s := range sampleEnvelopes() {
		b, err := wire.AppendEnvelope(nil, s.env)
		if err != nil {
			t.Fatal(err)
		}
		frame, err := wire.AppendFrame(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		seeds["env_"+s.name] = frame
		all = append(all, frame...)
	}
	seeds["stream_all_envelopes"] = all

	// A client's first bytes: preamble, then a Noise msg1 (a 32-byte ephemeral key, empty payload)
	// and a msg3-sized frame (48-byte encrypted static key + encrypted ClientHello + tag).
	msg1 := bytes.Repeat([]byte{0x5a}, 32)
	hs := append([]byte(wire.Preamble), must(wire.AppendFrame(nil, msg1))...)
	seeds["preamble_msg1"] = hs
	seeds["preamble_msg1_msg3"] = append(append([]byte(nil), hs...), must(wire.AppendFrame(nil, bytes.Repeat([]byte{0xc3}, 48+40+16)))...)
	seeds["preamble_v2_msg1"] = append([]byte("CHD\x02"), must(wire.AppendFrame(nil, msg1))...)
	seeds["tls_client_hello"] = []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
	seeds["http_get"] = []byte("GET / HTTP/1.1\r\nHost: chat.example\r\n\r\n")

	// Headers at and beyond the limit.
	seeds["oversized_max_plus_1"] = []byte{0x01, 0x00, 0x00}
	seeds["oversized_ffffff"] = []byte{0xff, 0xff, 0xff, 0x00}
	seeds["oversized_after_frame"] = append(must(wire.AppendFrame(nil, must(wire.AppendEnvelope(nil, sampleEnvelopes()[2].env)))), 0x01, 0x00, 0x00)
	seeds["empty_frame"] = []byte{0, 0, 0}
	seeds["max_frame_header_only"] = []byte{0x00, 0xff, 0xff}

	// Truncations of a real frame: inside the header, right after it, inside the payload.
	send := seeds["env_send"]
	for _, cut := range []int{1, 2, wire.HeaderLen, wire.HeaderLen + 1, len(send) / 2, len(send) - 1} {
		seeds[fmt.Sprintf("truncated_send_%d_of_%d", cut, len(send))] = send[:cut]
	}
	// A real frame whose envelope body is truncated but whose header matches: a decode failure.
	b := must(wire.AppendEnvelope(nil, sampleEnvelopes()[0].env))
	seeds["frame_truncated_envelope"] = must(wire.AppendFrame(nil, b[:len(b)-3]))
	return seeds
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// TestFuzzDecodeSeeds checks that the committed corpus matches the generator (and so the current
// schema and samples). Regenerate with: go test ./wire -run TestFuzzDecodeSeeds -update-seeds
func TestFuzzDecodeSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	seeds := fuzzDecodeSeeds(t)
	if *updateSeeds {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			if err := os.WriteFile(filepath.Join(dir, name), corpusFile(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, data := range seeds {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("seed %s: %v (regenerate with -update-seeds)", name, err)
			continue
		}
		if !bytes.Equal(got, corpusFile(data)) {
			t.Errorf("seed %s is stale (regenerate with -update-seeds)", name)
		}
		if !strings.HasPrefix(name, "env_") {
			continue
		}
		// Envelope seeds are one complete frame holding a decodable envelope.
		p, err := wire.NewReader(bytes.NewReader(data), 0).ReadFrame()
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		if err := wire.DecodeEnvelope(p, new(chatdpb.Envelope)); err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}
}

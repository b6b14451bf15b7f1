package wire_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

type namedEnvelope struct {
	name string // the oneof field name of the body, plus a suffix when a type appears twice
	env  *chatdpb.Envelope
}

// sampleEnvelopes returns realistic envelopes, at least one of every body type. The fuzz seeds are
// generated from them.
func sampleEnvelopes() []namedEnvelope {
	content := &chatdpb.Content{Version: 1, Body: []byte(`{"type":"text","text":"hello, world"}`)}
	return []namedEnvelope{
		{"login_result", &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
			Status: chatdpb.LoginResult_OK, Phone: "4915112345678", Business: true, ServerTimeMs: 1767225600000,
			PingIntervalMs: 30000, MaxFrame: wire.MaxFrame, SessionId: "s-7f3a9c",
		}}}},
		{"login_result_unknown_device", &chatdpb.Envelope{Body: &chatdpb.Envelope_LoginResult{LoginResult: &chatdpb.LoginResult{
			Status: chatdpb.LoginResult_UNKNOWN_DEVICE,
		}}}},
		{"ping", &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 42}}}},
		{"ping_empty", &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{}}}},
		{"pong", &chatdpb.Envelope{Body: &chatdpb.Envelope_Pong{Pong: &chatdpb.Pong{Id: 42}}}},
		{"send", &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
			ClientId: "c-0001-6b1d2f", To: "4915187654321", Content: content,
		}}}},
		{"send_ack", &chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: &chatdpb.SendAck{
			ClientId: "c-0001-6b1d2f", Status: chatdpb.SendAck_STORED, ServerId: 1 << 40, TimestampMs: 1767225600123,
		}}}},
		{"send_ack_invalid", &chatdpb.Envelope{Body: &chatdpb.Envelope_SendAck{SendAck: &chatdpb.SendAck{
			ClientId: "c-2", Status: chatdpb.SendAck_INVALID, Detail: "client_id longer than 64 bytes",
		}}}},
		{"deliver", &chatdpb.Envelope{Body: &chatdpb.Envelope_Deliver{Deliver: &chatdpb.Deliver{
			Seq: 7, Item: &chatdpb.Deliver_Message{Message: &chatdpb.Message{
				ServerId: 1 << 40, From: "4915112345678", TimestampMs: 1767225600123, Content: content, FromBusiness: true,
			}},
		}}}},
		{"deliver_receipt", &chatdpb.Envelope{Body: &chatdpb.Envelope_Deliver{Deliver: &chatdpb.Deliver{
			Seq: 8, Item: &chatdpb.Deliver_Receipt{Receipt: &chatdpb.Receipt{
				Type: chatdpb.Receipt_READ, ServerId: 1 << 40, ClientId: "c-0001-6b1d2f", By: "4915187654321", TimestampMs: 1767225601000,
			}},
		}}}},
		{"deliver_ack", &chatdpb.Envelope{Body: &chatdpb.Envelope_DeliverAck{DeliverAck: &chatdpb.DeliverAck{Seqs: []uint64{7, 8, 9, 1 << 33}}}}},
		{"mark_read", &chatdpb.Envelope{Body: &chatdpb.Envelope_MarkRead{MarkRead: &chatdpb.MarkRead{RequestId: 3, ServerIds: []uint64{1 << 40, 1<<40 + 1}}}}},
		{"mark_read_ack", &chatdpb.Envelope{Body: &chatdpb.Envelope_MarkReadAck{MarkReadAck: &chatdpb.MarkReadAck{RequestId: 3}}}},
		{"contact_query", &chatdpb.Envelope{Body: &chatdpb.Envelope_ContactQuery{ContactQuery: &chatdpb.ContactQuery{
			RequestId: 4, Phones: []string{"+49 151 12345678", "015112345678", "not a phone"},
		}}}},
		{"contact_result", &chatdpb.Envelope{Body: &chatdpb.Envelope_ContactResult{ContactResult: &chatdpb.ContactResult{
			RequestId: 4, Contacts: []*chatdpb.Contact{
				{Input: "+49 151 12345678", Phone: "4915112345678", Registered: true, Business: true, DisplayName: "Bäckerei Müller"},
				{Input: "not a phone"},
			},
		}}}},
		{"error", &chatdpb.Envelope{Body: &chatdpb.Envelope_Error{Error: &chatdpb.Error{RequestId: 4, Code: "too_many_phones", Message: "at most 1000 phones per query"}}}},
		{"close", &chatdpb.Envelope{Body: &chatdpb.Envelope_Close{Close: &chatdpb.Close{
			Reason: chatdpb.CloseReason_SERVER_SHUTDOWN, Detail: "restarting", RetryAfterMs: 5000,
		}}}},
		{"close_replaced", &chatdpb.Envelope{Body: &chatdpb.Envelope_Close{Close: &chatdpb.Close{Reason: chatdpb.CloseReason_REPLACED}}}},
	}
}

// Every body type of the schema has a sample (and so a fuzz seed and a round-trip test). Adding a
// body type to chatd.proto without a sample fails here.
func TestSampleEnvelopesCoverEveryBodyType(t *testing.T) {
	covered := map[protoreflect.Name]bool{}
	body := (&chatdpb.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	for _, s := range sampleEnvelopes() {
		fd := s.env.ProtoReflect().WhichOneof(body)
		if fd == nil {
			t.Fatalf("sample %s has no body", s.name)
		}
		if !strings.HasPrefix(s.name, string(fd.Name())) {
			t.Fatalf("sample %s has body %s", s.name, fd.Name())
		}
		covered[fd.Name()] = true
	}
	fields := body.Fields()
	for i := 0; i < fields.Len(); i++ {
		if name := fields.Get(i).Name(); !covered[name] {
			t.Errorf("no sample envelope with body %s", name)
		}
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, s := range sampleEnvelopes() {
		t.Run(s.name, func(t *testing.T) {
			prefix := []byte{0xAA, 0xBB}
			b, err := wire.AppendEnvelope(prefix, s.env)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("AppendEnvelope did not keep dst's prefix")
			}
			// Decode into an envelope holding something else: DecodeEnvelope resets it first.
			got := &chatdpb.Envelope{Body: &chatdpb.Envelope_Error{Error: &chatdpb.Error{Code: "stale"}}}
			if err := wire.DecodeEnvelope(b[len(prefix):], got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, s.env) {
				t.Fatalf("round trip changed the envelope:\n got  %v\n want %v", got, s.env)
			}
			// And through a frame.
			frame, err := wire.AppendFrame(nil, b[len(prefix):])
			if err != nil {
				t.Fatal(err)
			}
			p, err := wire.NewReader(bytes.NewReader(frame), 0).ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if err := wire.DecodeEnvelope(p, got); err != nil || !proto.Equal(got, s.env) {
				t.Fatalf("through a frame: %v, %v", err, got)
			}
		})
	}
}

// sendOfSize returns a Send envelope whose encoding is exactly n bytes.
func sendOfSize(t *testing.T, n int) *chatdpb.Envelope {
	t.Helper()
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
		ClientId: "c-1", To: "4915112345678", Content: &chatdpb.Content{Version: 1},
	}}}
	body := n
	for range 10 {
		env.GetSend().Content.Body = make([]byte, max(body, 0))
		size := proto.Size(env)
		if size == n {
			return env
		}
		body += n - size
	}
	t.Fatalf("cannot build an envelope of exactly %d bytes", n)
	return nil
}

func TestAppendEnvelopeLimit(t *testing.T) {
	ok := sendOfSize(t, wire.MaxEnvelope)
	b, err := wire.AppendEnvelope([]byte("x"), ok)
	if err != nil || len(b) != 1+wire.MaxEnvelope {
		t.Fatalf("envelope of exactly MaxEnvelope: %d bytes, %v", len(b), err)
	}
	// The largest envelope still fits one frame after encryption.
	if _, err := wire.AppendHeader(nil, wire.MaxEnvelope+16); err != nil {
		t.Fatalf("MaxEnvelope+tag does not fit a frame: %v", err)
	}

	for _, n := range []int{wire.MaxEnvelope + 1, wire.MaxFrame + 1, 1 << 20} {
		dst := make([]byte, 1, 16)
		dst[0] = 'x'
		out, err := wire.AppendEnvelope(dst, sendOfSize(t, n))
		var tl *wire.FrameTooLargeError
		if !errors.As(err, &tl) || tl.Size != n || tl.Max != wire.MaxEnvelope {
			t.Fatalf("envelope of %d bytes: err = %v, want *FrameTooLargeError{%d, %d}", n, err, n, wire.MaxEnvelope)
		}
		if string(out) != "x" {
			t.Fatalf("envelope of %d bytes: dst changed to %d bytes", n, len(out))
		}
	}
}

func TestAppendEnvelopeRejectsInvalidUTF8(t *testing.T) {
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{ClientId: "\xff\xfe"}}}
	out, err := wire.AppendEnvelope([]byte("x"), env)
	if err == nil {
		t.Fatal("an envelope with an invalid UTF-8 string was encoded")
	}
	if string(out) != "x" {
		t.Fatalf("dst changed to %q", out)
	}
}

func TestDecodeEnvelopeRejects(t *testing.T) {
	valid, _ := wire.AppendEnvelope(nil, sampleEnvelopes()[0].env)
	unknownOnly := protowire.AppendTag(nil, 99, protowire.VarintType) // a body type from a newer revision
	unknownOnly = protowire.AppendVarint(unknownOnly, 1)
	badUTF8 := protowire.AppendTag(nil, 12, protowire.BytesType) // Error{code: "\xff"}
	badUTF8 = protowire.AppendBytes(badUTF8, protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0xff}))
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"zero byte", []byte{0}},
		{"0xff", []byte{0xff}},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n")},
		{"truncated", valid[:len(valid)-1]},
		{"length beyond end", []byte{0x0a, 0x7f}},
		{"unknown field only", unknownOnly},
		{"group wire type", []byte{0x0b}},
		{"invalid UTF-8 string", badUTF8},
		{"wrong wire type for body", []byte{0x10, 0x01}}, // field 2 (ping) as varint
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 1}}}
			err := wire.DecodeEnvelope(tt.in, env)
			if !errors.Is(err, wire.ErrBadEnvelope) {
				t.Fatalf("DecodeEnvelope(% x) = %v, want ErrBadEnvelope", tt.in, err)
			}
		})
	}
}

func TestDecodeEnvelopeEmptyBodyResets(t *testing.T) {
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 1}}}
	err := wire.DecodeEnvelope(nil, env)
	if !errors.Is(err, wire.ErrBadEnvelope) || !strings.Contains(err.Error(), "no body") {
		t.Fatalf("empty envelope: %v, want ErrBadEnvelope naming the missing body", err)
	}
	if env.Body != nil {
		t.Fatalf("a rejected empty envelope left the previous body %v in place", env.Body)
	}
}

func TestCloseReasonName(t *testing.T) {
	for r, want := range map[chatdpb.CloseReason]string{
		chatdpb.CloseReason_CLOSE_REASON_UNSPECIFIED: "unspecified",
		chatdpb.CloseReason_IDLE_TIMEOUT:             "idle_timeout",
		chatdpb.CloseReason_REPLACED:                 "replaced",
		chatdpb.CloseReason_CLIENT_CLOSED:            "client_closed",
		chatdpb.CloseReason_FRAME_TOO_LARGE:          "frame_too_large",
		chatdpb.CloseReason_UNSUPPORTED_VERSION:      "unsupported_version",
		chatdpb.CloseReason(999):                     "reason_999",
		chatdpb.CloseReason(-1):                      "reason_-1",
	} {
		if got := wire.CloseReasonName(r); got != want {
			t.Errorf("CloseReasonName(%d) = %q, want %q", r, got, want)
		}
	}
	// Every reason has a distinct lower-case name usable as a metric label.
	seen := map[string]chatdpb.CloseReason{}
	for v := range chatdpb.CloseReason_name {
		r := chatdpb.CloseReason(v)
		name := wire.CloseReasonName(r)
		if name != strings.ToLower(name) || strings.ContainsAny(name, " -") || strings.HasPrefix(name, "reason_") {
			t.Errorf("CloseReasonName(%v) = %q", r, name)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("reasons %v and %v share the name %q", prev, r, name)
		}
		seen[name] = r
	}
}

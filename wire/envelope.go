package wire

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Limits on envelope fields that the server enforces (docs/protocol.md, "Limits").
const (
	MaxClientIDLen      = 64    // Send.client_id
	MaxContentLen       = 60000 // Content.body
	MaxContactsPerQuery = 256   // ContactQuery.phones (so that a ContactResult always fits one frame)
	MaxContactInputLen  = 32    // each ContactQuery.phones entry
	MaxDisplayNameLen   = 128   // Contact.display_name (longer names are cut)
	MaxIDsPerMarkRead   = 1000  // MarkRead.server_ids
	MaxSeqsPerAck       = 4096  // DeliverAck.seqs
)

var marshalOpts = proto.MarshalOptions{}

// AppendEnvelope appends the encoding of env to dst. It fails when the result would exceed MaxEnvelope.
func AppendEnvelope(dst []byte, env *chatdpb.Envelope) ([]byte, error) {
	start := len(dst)
	out, err := marshalOpts.MarshalAppend(dst, env)
	if err != nil {
		return dst, fmt.Errorf("wire: encoding envelope: %w", err)
	}
	if n := len(out) - start; n > MaxEnvelope {
		return dst, &FrameTooLargeError{Size: n, Max: MaxEnvelope}
	}
	return out, nil
}

// DecodeEnvelope parses one envelope into env (which is reset first). It returns ErrBadEnvelope
// (wrapped, with the cause) for undecodable bytes and for an envelope whose body is not set — which is
// also what an envelope from a newer protocol revision with an unknown body type looks like.
func DecodeEnvelope(b []byte, env *chatdpb.Envelope) error {
	proto.Reset(env)
	if err := proto.Unmarshal(b, env); err != nil {
		return fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	if env.Body == nil {
		return fmt.Errorf("%w: no body", ErrBadEnvelope)
	}
	return nil
}

// CloseReasonName is the lower-case name of r used in logs and metrics, e.g. "idle_timeout".
func CloseReasonName(r chatdpb.CloseReason) string {
	if name, ok := closeNames[r]; ok {
		return name
	}
	return fmt.Sprintf("reason_%d", int32(r))
}

var closeNames = func() map[chatdpb.CloseReason]string {
	m := make(map[chatdpb.CloseReason]string, len(chatdpb.CloseReason_name))
	for v, name := range chatdpb.CloseReason_name {
		b := []byte(name)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		m[chatdpb.CloseReason(v)] = string(b)
	}
	m[chatdpb.CloseReason_CLOSE_REASON_UNSPECIFIED] = "unspecified"
	return m
}()

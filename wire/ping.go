package wire

import "google.golang.org/protobuf/encoding/protowire"

// Pings are most of what an idle connection carries: every client sends one every 25 s or so, and a
// server holding hundreds of thousands of connections answers thousands per second. ParsePing and
// AppendPong handle them without protobuf messages (none to allocate, reflect over and reset): they
// read and write exactly the bytes proto.Marshal gives for Envelope{Ping{Id}} and Envelope{Pong{Id}}.
// Anything else — an id encoded differently, unknown fields, trailing bytes — is not "a ping" to
// ParsePing, and the caller decodes it the general way.

// The tags, each one byte: field number << 3 | wire type (protowire.EncodeTag).
const (
	tagPing   = 2<<3 | byte(protowire.BytesType)  // Envelope.ping
	tagPong   = 3<<3 | byte(protowire.BytesType)  // Envelope.pong
	tagPingID = 1<<3 | byte(protowire.VarintType) // Ping.id and Pong.id
)

// ParsePing reports whether b is the canonical encoding of an envelope that holds only a Ping, and
// its id.
func ParsePing(b []byte) (id uint64, ok bool) {
	if len(b) < 2 || b[0] != tagPing || int(b[1]) != len(b)-2 {
		return 0, false
	}
	body := b[2:]
	if len(body) == 0 {
		return 0, true // Ping{Id: 0}: proto3 leaves the zero id out
	}
	if body[0] != tagPingID {
		return 0, false
	}
	id, n := protowire.ConsumeVarint(body[1:])
	// The whole rest is one varint; a zero id would have been left out, and a varint with
	// superfluous continuation bytes is not canonical.
	if n < 0 || n != len(body)-1 || id == 0 || n != protowire.SizeVarint(id) {
		return 0, false
	}
	return id, true
}

// AppendPong appends the encoding of Envelope{Pong{Id: id}} to dst.
func AppendPong(dst []byte, id uint64) []byte {
	if id == 0 {
		return append(dst, tagPong, 0)
	}
	dst = append(dst, tagPong, byte(1+protowire.SizeVarint(id)), tagPingID)
	return protowire.AppendVarint(dst, id)
}

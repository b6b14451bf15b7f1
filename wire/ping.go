package wire

import "encoding/binary"

// Pings are most of what an idle connection carries: every client sends one every 25 s or so, and a
// server holding hundreds of thousands of connections answers thousands per second. ParsePing and
// AppendPong handle them without protobuf (no message to allocate, reflect over and reset): they read
// and write exactly the bytes proto.Marshal gives for Envelope{Ping{Id}} and Envelope{Pong{Id}}.
// Anything else — an id encoded differently, unknown fields, trailing bytes — is not "a ping" to
// ParsePing, and the caller decodes it the general way.

const (
	tagPing   = 2<<3 | 2 // Envelope.ping, length-delimited
	tagPong   = 3<<3 | 2 // Envelope.pong, length-delimited
	tagPingID = 1<<3 | 0 // Ping.id and Pong.id, varint
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
	id, n := binary.Uvarint(body[1:])
	// n == len: the whole rest is one varint; a zero id would have been left out, and a varint
	// with superfluous continuation bytes is not canonical.
	if n <= 0 || n != len(body)-1 || id == 0 || n != varintLen(id) {
		return 0, false
	}
	return id, true
}

// AppendPong appends the encoding of Envelope{Pong{Id: id}} to dst.
func AppendPong(dst []byte, id uint64) []byte {
	if id == 0 {
		return append(dst, tagPong, 0)
	}
	dst = append(dst, tagPong, byte(1+varintLen(id)), tagPingID)
	return binary.AppendUvarint(dst, id)
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

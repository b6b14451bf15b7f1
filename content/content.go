// Package content is the application layer of message content: what chat clients and bizapi put in
// the opaque, versioned Content field that chatd carries without looking inside (docs/protocol.md §5).
//
// Version 1: the body is UTF-8 JSON {"type":"text","text":"…"}. Other types may follow under version 1
// with their own fields; a new version is for an incompatible encoding (e.g. end-to-end encryption).
package content

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// Version is the content version this package writes.
const Version = 1

// Body is a decoded version-1 body.
type Body struct {
	Type string `json:"type"` // "text"
	Text string `json:"text,omitempty"`
}

// ErrUnsupported is returned (wrapped) by Parse for a version it does not read.
var ErrUnsupported = errors.New("content: unsupported version")

// Text returns the content of a text message.
func Text(s string) *chatdpb.Content {
	body, _ := json.Marshal(Body{Type: "text", Text: s}) // cannot fail
	return &chatdpb.Content{Version: Version, Body: body}
}

// Parse decodes c. A body of another type than "text" parses fine; callers check Type.
func Parse(c *chatdpb.Content) (Body, error) {
	if c.GetVersion() != Version {
		return Body{}, fmt.Errorf("%w %d (%d bytes)", ErrUnsupported, c.GetVersion(), len(c.GetBody()))
	}
	var b Body
	if err := json.Unmarshal(c.GetBody(), &b); err != nil {
		return Body{}, fmt.Errorf("content: malformed version 1 body (%d bytes): %w", len(c.GetBody()), err)
	}
	if b.Type == "" {
		return Body{}, fmt.Errorf("content: version 1 body without a type")
	}
	return b, nil
}

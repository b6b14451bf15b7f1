package content

import (
	"errors"
	"testing"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

func TestTextRoundTrip(t *testing.T) {
	for _, s := range []string{"", "hello", "ünïcødé ✓ \"quoted\"\n"} {
		b, err := Parse(Text(s))
		if err != nil || b.Type != "text" || b.Text != s {
			t.Fatalf("Parse(Text(%q)) = %+v, %v", s, b, err)
		}
	}
	if got := string(Text("hi").GetBody()); got != `{"type":"text","text":"hi"}` {
		t.Fatalf("wire form %s", got)
	}
}

func TestParseRejects(t *testing.T) {
	if _, err := Parse(&chatdpb.Content{Version: 2, Body: []byte("x")}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("version 2: %v", err)
	}
	for _, body := range []string{"", "not json", `{"text":"no type"}`} {
		if _, err := Parse(&chatdpb.Content{Version: 1, Body: []byte(body)}); err == nil {
			t.Errorf("body %q accepted", body)
		}
	}
	if b, err := Parse(&chatdpb.Content{Version: 1, Body: []byte(`{"type":"image"}`)}); err != nil || b.Type != "image" {
		t.Fatalf("other type: %+v %v", b, err)
	}
}

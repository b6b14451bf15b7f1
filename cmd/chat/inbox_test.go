package main

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/wire/chatdpb"
)

func msg(id uint64, text string) *chatdpb.Message {
	return &chatdpb.Message{ServerId: id, From: "15550000001", TimestampMs: time.Now().UnixMilli(), Content: textContent(text)}
}

func TestInboxDedupAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	in, err := openInbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup, err := in.AddMessage(msg(7, "hi")); dup || err != nil {
		t.Fatalf("first add: dup %v, %v", dup, err)
	}
	if _, dup, _ := in.AddMessage(msg(7, "hi")); !dup {
		t.Error("same id twice is not a duplicate")
	}
	if _, dup, _ := in.AddMessage(&chatdpb.Message{ServerId: 8, Content: &chatdpb.Content{Version: 2, Body: []byte{1, 2}}}); dup {
		t.Error("id 8 is a duplicate")
	}
	if err := in.MarkedRead([]uint64{7}, time.Now()); err != nil {
		t.Fatal(err)
	}
	in.Close()

	// A crash in the middle of a line leaves half a line; it is skipped and the next line starts fresh.
	f, _ := os.OpenFile(filepath.Join(dir, inboxFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"kind":"message","server_id":9,"te`)
	f.Close()

	in, err = openInbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := in.AddMessage(msg(7, "hi")); !dup {
		t.Error("id 7 not a duplicate after reopening")
	}
	if _, dup, err := in.AddMessage(msg(9, "nine")); dup || err != nil {
		t.Errorf("id 9 (cut off before) after reopening: dup %v, %v", dup, err)
	}
	msgs, unread := in.Messages(), in.Unread()
	if len(msgs) != 3 || len(unread) != 2 || unread[0].ServerID != 8 {
		t.Errorf("messages %v, unread %v", msgs, unread)
	}
	if got := msgs[1].display(); !strings.Contains(got, "content version 2") {
		t.Errorf("a version 2 message shows as %q", got)
	}
	in.Close()

	// Without inbox.jsonl, the seen file still knows the ids.
	os.Remove(filepath.Join(dir, inboxFile))
	in, err = openInbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, dup, _ := in.AddMessage(msg(9, "nine")); !dup {
		t.Error("id 9 not a duplicate with only the seen file")
	}
}

func TestInboxSeenCompaction(t *testing.T) {
	dir := t.TempDir()
	in, err := openInbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	// Fill the seen file past twice its size without the cost of fsyncing each message.
	var b strings.Builder
	for id := 1; id <= 2*keepSeen; id++ {
		b.WriteString(strconv.Itoa(id) + "\n")
	}
	in.Close()
	os.WriteFile(filepath.Join(dir, seenFile), []byte(b.String()), 0o600)
	in, err = openInbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, dup, _ := in.AddMessage(msg(2*keepSeen+1, "x")); dup {
		t.Fatal("new id is a duplicate")
	}
	ids, _ := readSeen(filepath.Join(dir, seenFile))
	if len(ids) != keepSeen || ids[len(ids)-1] != 2*keepSeen+1 {
		t.Errorf("after compaction the seen file has %d ids, last %d", len(ids), ids[len(ids)-1])
	}
	if _, dup, _ := in.AddMessage(msg(2*keepSeen, "x")); !dup {
		t.Error("a recent id was forgotten")
	}
}

func TestParseInterspersed(t *testing.T) {
	a := &app{getenv: func(string) string { return "" }}
	tests := []struct {
		args     []string
		wantPos  string
		wantWait string
	}{
		{[]string{"+1555", "hello", "--wait", "read", "world"}, "+1555 hello world", "read"},
		{[]string{"--wait=delivered", "+1555", "hi"}, "+1555 hi", "delivered"},
		{[]string{"+1555", "--", "-5", "--wait", "x"}, "+1555 -5 --wait x", ""},
		{[]string{"+1555", "a", "-"}, "+1555 a -", ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		wait := fs.String("wait", "", "")
		pos, err := a.parse(fs, tt.args)
		if err != nil {
			t.Errorf("%q: %v", tt.args, err)
			continue
		}
		if strings.Join(pos, " ") != tt.wantPos || *wait != tt.wantWait {
			t.Errorf("%q: positional %q wait %q; want %q and %q", tt.args, pos, *wait, tt.wantPos, tt.wantWait)
		}
	}
}

func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                 "plain",
		"\x1b[2J\x1b]0;pwned\a": "\uFFFD[2J\uFFFD]0;pwned\uFFFD",
		"two\nlines":            "two\n    lines",
		"bidi \u202egnp.exe":    "bidi \uFFFDgnp.exe",
		"emoji 👩‍💻 ok":          "emoji 👩‍💻 ok",
		"tab\there\r":           "tab\there\uFFFD",
	} {
		if got := safe(in); got != want {
			t.Errorf("safe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContent(t *testing.T) {
	if text, ok := contentText(textContent(`say "hi" <b>`)); !ok || text != `say "hi" <b>` {
		t.Errorf("round trip: %q %v", text, ok)
	}
	for _, c := range []*chatdpb.Content{
		{Version: 1, Body: []byte(`{"type":"image","url":"x"}`)},
		{Version: 1, Body: []byte(`not json`)},
		{Version: 3},
		nil,
	} {
		if text, ok := contentText(c); ok || !strings.HasPrefix(text, "[") {
			t.Errorf("%v: %q %v", c, text, ok)
		}
	}
}

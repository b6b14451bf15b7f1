package main

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/chatd-dev/chatd/content"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// console serializes the output of the goroutines that print: the command, the connection's reader
// (arriving messages) and the workers.
type console struct {
	mu       sync.Mutex
	out, err io.Writer
}

func newConsole(out, err io.Writer) *console { return &console{out: out, err: err} }

// Printf writes a line to stdout.
func (c *console) Printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, strings.TrimSuffix(format, "\n")+"\n", args...)
}

// Noticef writes a line to stderr.
func (c *console) Noticef(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.err, strings.TrimSuffix(format, "\n")+"\n", args...)
}

func textContent(text string) *chatdpb.Content { return content.Text(text) }

// contentText returns the text of a text message; ok is false for anything else, and text then
// describes it.
func contentText(c *chatdpb.Content) (text string, ok bool) {
	b, err := content.Parse(c)
	switch {
	case errors.Is(err, content.ErrUnsupported):
		return fmt.Sprintf("[content version %d, %d bytes; this chat shows version %d only]", c.GetVersion(), len(c.GetBody()), content.Version), false
	case err != nil:
		return fmt.Sprintf("[malformed content, %d bytes]", len(c.GetBody())), false
	case b.Type != "text":
		return fmt.Sprintf("[%q message; this chat shows text only]", b.Type), false
	}
	return b.Text, true
}

// plus formats a normalized number for people: +15551234567.
func plus(phone string) string {
	if phone == "" || strings.HasPrefix(phone, "+") {
		return phone
	}
	return "+" + phone
}

// stamp formats a time for message lines: the time of day today, else date and time.
func stamp(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// safe makes text from the network harmless for a terminal: control characters (escape sequences)
// are replaced, and continuation lines are indented.
func safe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || (unicode.Is(unicode.Cf, r) && r != '\u200d') {
			return '\uFFFD'
		}
		return r
	}, s)
	return strings.ReplaceAll(s, "\n", "\n    ")
}

// fingerprint is the SHA-256 of a public key in the style of ssh: "SHA256:" and unpadded base64.
func fingerprint(pub [32]byte) string {
	sum := sha256.Sum256(pub[:])
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func formatMessage(e Entry, now time.Time) string {
	from := plus(e.From)
	if e.FromBusiness {
		from += " (business)"
	}
	return fmt.Sprintf("[%s] %s: %s (id %d)", stamp(e.Time, now), from, safe(e.display()), e.ServerID)
}

func formatReceipt(e Entry, now time.Time) string {
	if e.Receipt == receiptRead {
		return fmt.Sprintf("[%s] ✓✓ read by %s (id %d)", stamp(e.Time, now), plus(e.By), e.ServerID)
	}
	return fmt.Sprintf("[%s] ✓ delivered to %s (id %d)", stamp(e.Time, now), plus(e.By), e.ServerID)
}

package wire

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// hookReader calls hook before every Read; the hook runs on the reading goroutine, so it may look
// at the Reader's state without a data race.
type hookReader struct {
	r    io.Reader
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	h.hook()
	return h.r.Read(p)
}

// A buffer larger than keepBuf is released when the read loop comes back for the next frame, before
// it blocks on the header: an idle connection that once got a large frame must not hold it.
func TestReaderDropsLargeBufferBeforeWaiting(t *testing.T) {
	var stream []byte
	stream, _ = AppendFrame(stream, make([]byte, keepBuf+1))
	stream, _ = AppendFrame(stream, make([]byte, keepBuf))
	stream, _ = AppendFrame(stream, make([]byte, 10))

	var fr *Reader
	var caps []int // cap(fr.buf) at each Read of the underlying stream
	fr = NewReader(&hookReader{r: bytes.NewReader(stream), hook: func() { caps = append(caps, cap(fr.buf)) }}, 0)

	if p, err := fr.ReadFrame(); err != nil || len(p) != keepBuf+1 {
		t.Fatalf("frame 1: %d bytes, %v", len(p), err)
	}
	caps = nil
	if p, err := fr.ReadFrame(); err != nil || len(p) != keepBuf {
		t.Fatalf("frame 2: %d bytes, %v", len(p), err)
	}
	if len(caps) == 0 || caps[0] != 0 {
		t.Fatalf("waiting for the header after a %d-byte frame, the reader held a buffer of cap %v, want 0", keepBuf+1, caps)
	}
	// A buffer of exactly keepBuf is kept and reused.
	caps = nil
	if p, err := fr.ReadFrame(); err != nil || len(p) != 10 {
		t.Fatalf("frame 3: %d bytes, %v", len(p), err)
	}
	if len(caps) == 0 || caps[0] != keepBuf {
		t.Fatalf("after a %d-byte frame the reader held cap %v while waiting, want %d (kept)", keepBuf, caps, keepBuf)
	}
	if cap(fr.buf) != keepBuf {
		t.Fatalf("a 10-byte frame after a %d-byte one reallocated: cap %d", keepBuf, cap(fr.buf))
	}
}

// A rejected header leaves the reader's buffer alone: nothing is allocated for it.
func TestFrameTooLargeLeavesBufferUntouched(t *testing.T) {
	fr := NewReader(strings.NewReader("\xff\xff\xff"), MaxFrame)
	if _, err := fr.ReadFrame(); err == nil {
		t.Fatal("no error")
	}
	if fr.buf != nil {
		t.Fatalf("rejected frame left a buffer of cap %d", cap(fr.buf))
	}
}

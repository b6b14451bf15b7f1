package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/chatd-dev/chatd/wire"
)

func TestPreambleConstants(t *testing.T) {
	if len(wire.Preamble) != 4 || wire.Preamble[:3] != wire.Magic || wire.Preamble[3] != wire.Version {
		t.Fatalf("Preamble %q is not Magic %q + Version %d", wire.Preamble, wire.Magic, wire.Version)
	}
	// The 443 multiplexer tells chatd from TLS by the first byte (0x16 is a TLS handshake record).
	if wire.Preamble[0] == 0x16 {
		t.Fatal("preamble starts with the TLS handshake record type")
	}
}

func TestReadPreamble(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error // nil: accepted
	}{
		{"v1", wire.Preamble, nil},
		{"v1 followed by a frame", wire.Preamble + "\x00\x00\x20" + strings.Repeat("e", 32), nil},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", wire.ErrBadPreamble},
		{"HTTP GET", "GET / HTTP/1.1\r\nHost: chat.example\r\n\r\n", wire.ErrBadPreamble},
		{"HTTP CONNECT", "CONNECT chat.example:5222 HTTP/1.1\r\n\r\n", wire.ErrBadPreamble},
		{"lower-case magic", "chd\x01", wire.ErrBadPreamble},
		{"version 2", "CHD\x02", wire.ErrUnsupportedVersion},
		{"version 0", "CHD\x00", wire.ErrUnsupportedVersion},
		{"version 255", "CHD\xff", wire.ErrUnsupportedVersion},
		{"zeros", "\x00\x00\x00\x00", wire.ErrBadPreamble},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := strings.NewReader(tt.in)
			err := wire.ReadPreamble(r)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ReadPreamble(%q) = %v, want nil", tt.in, err)
				}
				// Exactly the preamble is consumed; the rest belongs to the frame reader.
				if got, want := r.Len(), len(tt.in)-len(wire.Preamble); got != want {
					t.Fatalf("ReadPreamble left %d bytes unread, want %d", got, want)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadPreamble(%q) = %v, want %v", tt.in, err, tt.wantErr)
			}
			// CheckPreamble agrees with ReadPreamble on the same bytes.
			cerr := wire.CheckPreamble([]byte(tt.in))
			if (cerr == nil) != (tt.wantErr == nil) || (tt.wantErr != nil && !errors.Is(cerr, tt.wantErr)) {
				t.Fatalf("CheckPreamble(%q) = %v, want %v", tt.in, cerr, tt.wantErr)
			}
		})
	}
}

func TestPreambleVersionErrorNamesVersion(t *testing.T) {
	err := wire.CheckPreamble([]byte("CHD\x02"))
	if !errors.Is(err, wire.ErrUnsupportedVersion) || errors.Is(err, wire.ErrBadPreamble) {
		t.Fatalf("err = %v, want only ErrUnsupportedVersion", err)
	}
	if !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("err = %q, want it to name version 2", err)
	}
}

func TestReadPreambleShortInput(t *testing.T) {
	for _, in := range []string{"", "C", "CH", "CHD"} {
		err := wire.ReadPreamble(strings.NewReader(in))
		if err == nil {
			t.Fatalf("ReadPreamble(%q) = nil, want an error", in)
		}
		want := io.ErrUnexpectedEOF
		if in == "" {
			want = io.EOF
		}
		if !errors.Is(err, want) {
			t.Fatalf("ReadPreamble(%q) = %v, want %v", in, err, want)
		}
		if err := wire.CheckPreamble([]byte(in)); !errors.Is(err, wire.ErrBadPreamble) {
			t.Fatalf("CheckPreamble(%q) = %v, want ErrBadPreamble", in, err)
		}
	}
	// A reader that fails is reported, not mistaken for a bad preamble.
	boom := errors.New("boom")
	if err := wire.ReadPreamble(io.MultiReader(strings.NewReader("CH"), errReader{boom})); !errors.Is(err, boom) {
		t.Fatalf("ReadPreamble over a failing reader = %v, want %v", err, boom)
	}
}

func TestLooksLikePreamble(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", true}, // nothing seen yet: cannot be ruled out
		{"C", true},
		{"CH", true},
		{"CHD", true},
		{"CHD\x01", true},
		{"CHD\x02", true}, // any version: the chatd handler reports the version error
		{"CHD\x01\x00\x00\x20", true},
		{"\x16", false},
		{"\x16\x03\x01", false},
		{"G", false},
		{"GET / HTTP/1.1", false},
		{"CO", false}, // CONNECT
		{"CONNECT", false},
		{"CHX", false},
		{"cHD\x01", false},
		{"XCHD\x01", false},
	}
	for _, tt := range tests {
		if got := wire.LooksLikePreamble([]byte(tt.in)); got != tt.want {
			t.Errorf("LooksLikePreamble(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	// Every prefix of the real preamble looks like one.
	for i := 0; i <= len(wire.Preamble); i++ {
		if !wire.LooksLikePreamble([]byte(wire.Preamble[:i])) {
			t.Errorf("LooksLikePreamble(%q) = false for a prefix of the preamble", wire.Preamble[:i])
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 2, 255, 256, 4095, 4096, 4097, wire.MaxHandshakeFrame, wire.MaxFrame - 1, wire.MaxFrame} {
		payload := pattern(n)

		var stream bytes.Buffer
		if err := wire.WriteFrame(&stream, payload); err != nil {
			t.Fatalf("WriteFrame(%d bytes): %v", n, err)
		}
		if got, want := stream.Len(), wire.HeaderLen+n; got != want {
			t.Fatalf("WriteFrame(%d bytes) wrote %d bytes, want %d", n, got, want)
		}
		hdr := stream.Bytes()[:wire.HeaderLen]
		if got := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2]); got != n {
			t.Fatalf("header of a %d-byte frame announces %d (big-endian 3 bytes: % x)", n, got, hdr)
		}
		// AppendFrame produces the same bytes as WriteFrame and keeps dst's prefix.
		app, err := wire.AppendFrame([]byte("prefix"), payload)
		if err != nil {
			t.Fatalf("AppendFrame(%d bytes): %v", n, err)
		}
		if !bytes.Equal(app, append([]byte("prefix"), stream.Bytes()...)) {
			t.Fatalf("AppendFrame(%d bytes) differs from WriteFrame", n)
		}

		fr := wire.NewReader(&stream, wire.MaxFrame)
		got, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("ReadFrame of a %d-byte frame: %v", n, err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("ReadFrame of a %d-byte frame returned %d different bytes", n, len(got))
		}
		if _, err := fr.ReadFrame(); err != io.EOF {
			t.Fatalf("ReadFrame after the last frame = %v, want io.EOF", err)
		}
	}
}

func TestManyFramesOnOneStream(t *testing.T) {
	sizes := []int{5, 0, 5000, 1, wire.MaxFrame, 3, 70, 0}
	var stream []byte
	for _, n := range sizes {
		var err error
		if stream, err = wire.AppendFrame(stream, pattern(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Deliver the stream one byte per Read to exercise partial reads of header and payload.
	fr := wire.NewReader(&oneByteReader{b: stream}, 0)
	for i, n := range sizes {
		got, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, pattern(n)) {
			t.Fatalf("frame %d: got %d bytes, want %d", i, len(got), n)
		}
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after all frames: %v, want io.EOF", err)
	}
}

func TestAppendHeaderLimits(t *testing.T) {
	for _, n := range []int{-1, wire.MaxFrame + 1, 1 << 24, 1 << 30} {
		dst := []byte("keep")
		out, err := wire.AppendHeader(dst, n)
		var tl *wire.FrameTooLargeError
		if !errors.As(err, &tl) || tl.Size != n || tl.Max != wire.MaxFrame {
			t.Fatalf("AppendHeader(%d) = %v, want *FrameTooLargeError{%d, %d}", n, err, n, wire.MaxFrame)
		}
		if string(out) != "keep" {
			t.Fatalf("AppendHeader(%d) changed dst to %q", n, out)
		}
	}
	if err := wire.WriteFrame(failWriter{t}, make([]byte, wire.MaxFrame+1)); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("WriteFrame(MaxFrame+1) = %v, want ErrFrameTooLarge", err)
	}
	if _, err := wire.AppendFrame(nil, make([]byte, wire.MaxFrame+1)); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("AppendFrame(MaxFrame+1) = %v, want ErrFrameTooLarge", err)
	}
}

// WriteFrame must hand the frame to the writer in one call: on a stream shared by the session's
// writer, header and payload must not be split (and one write is one TCP segment for small frames).
func TestWriteFrameSingleWrite(t *testing.T) {
	w := &countingWriter{}
	if err := wire.WriteFrame(w, pattern(300)); err != nil {
		t.Fatal(err)
	}
	if w.calls != 1 || w.n != 303 {
		t.Fatalf("WriteFrame made %d Write calls for %d bytes, want 1 call of 303", w.calls, w.n)
	}
}

func TestFrameTooLarge(t *testing.T) {
	tests := []struct {
		hdr  string
		max  int
		size int
	}{
		{"\x01\x00\x00", wire.MaxFrame, wire.MaxFrame + 1},
		{"\xff\xff\xff", wire.MaxFrame, 0xFFFFFF},
		{"\x00\x08\x01", wire.MaxHandshakeFrame, wire.MaxHandshakeFrame + 1},
		{"\x00\x00\x02", 1, 2},
	}
	for _, tt := range tests {
		// The stream holds only the 3 header bytes, followed by a reader that fails the test if the
		// frame reader asks for more: a too-large frame must be rejected on the header alone.
		src := io.MultiReader(strings.NewReader(tt.hdr), failReader{t})
		fr := wire.NewReader(src, tt.max)
		p, err := fr.ReadFrame()
		var tl *wire.FrameTooLargeError
		if !errors.As(err, &tl) {
			t.Fatalf("header % x with max %d: err = %v, want *FrameTooLargeError", tt.hdr, tt.max, err)
		}
		if tl.Size != tt.size || tl.Max != tt.max {
			t.Fatalf("header % x: got %+v, want Size %d Max %d", tt.hdr, *tl, tt.size, tt.max)
		}
		if !errors.Is(err, wire.ErrFrameTooLarge) {
			t.Fatalf("errors.Is(%v, ErrFrameTooLarge) = false", err)
		}
		if p != nil {
			t.Fatalf("payload %d bytes returned with the error", len(p))
		}
	}
}

// A header announcing MaxFrame+1 or 16 MiB-1 must cost no payload allocation: the only allocation
// allowed is the error value itself.
func TestFrameTooLargeDoesNotAllocate(t *testing.T) {
	for _, hdr := range []string{"\x01\x00\x00", "\xff\xff\xff"} {
		src := strings.NewReader(hdr)
		fr := wire.NewReader(src, wire.MaxFrame)
		var err error
		allocs := testing.AllocsPerRun(100, func() {
			src.Reset(hdr)
			_, err = fr.ReadFrame()
		})
		if !errors.Is(err, wire.ErrFrameTooLarge) {
			t.Fatalf("header % x: %v", hdr, err)
		}
		if allocs > 1 {
			t.Fatalf("header % x: %.0f allocations per rejected frame, want at most 1 (the error)", hdr, allocs)
		}
	}
}

func TestFrameLimitBoundary(t *testing.T) {
	frame, _ := wire.AppendFrame(nil, pattern(wire.MaxHandshakeFrame))
	if p, err := wire.NewReader(bytes.NewReader(frame), wire.MaxHandshakeFrame).ReadFrame(); err != nil || len(p) != wire.MaxHandshakeFrame {
		t.Fatalf("frame of exactly the limit: %d bytes, %v", len(p), err)
	}
	// SetMax raises and lowers the limit between frames.
	stream, _ := wire.AppendFrame(nil, pattern(wire.MaxHandshakeFrame+1))
	stream, _ = wire.AppendFrame(stream, pattern(wire.MaxHandshakeFrame+1))
	fr := wire.NewReader(bytes.NewReader(stream), wire.MaxHandshakeFrame)
	fr.SetMax(wire.MaxFrame)
	if _, err := fr.ReadFrame(); err != nil {
		t.Fatalf("after SetMax(MaxFrame): %v", err)
	}
	fr.SetMax(wire.MaxHandshakeFrame)
	if _, err := fr.ReadFrame(); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("after SetMax(MaxHandshakeFrame): %v, want ErrFrameTooLarge", err)
	}
	// Limits ≤ 0 or above MaxFrame mean MaxFrame, never more.
	for _, max := range []int{0, -5, wire.MaxFrame + 1, 1 << 24} {
		for _, viaSet := range []bool{false, true} {
			var fr *wire.Reader
			if viaSet {
				fr = wire.NewReader(strings.NewReader("\x01\x00\x00"), 10)
				fr.SetMax(max)
			} else {
				fr = wire.NewReader(strings.NewReader("\x01\x00\x00"), max)
			}
			_, err := fr.ReadFrame()
			var tl *wire.FrameTooLargeError
			if !errors.As(err, &tl) || tl.Max != wire.MaxFrame {
				t.Fatalf("limit %d (SetMax %v): %v, want *FrameTooLargeError with Max %d", max, viaSet, err, wire.MaxFrame)
			}
		}
	}
}

func TestTruncatedFrame(t *testing.T) {
	full, _ := wire.AppendFrame(nil, pattern(100))
	for _, cut := range []int{1, 2, wire.HeaderLen, wire.HeaderLen + 1, wire.HeaderLen + 50, len(full) - 1} {
		_, err := wire.NewReader(bytes.NewReader(full[:cut]), 0).ReadFrame()
		if err != io.ErrUnexpectedEOF {
			t.Errorf("frame cut after %d of %d bytes: err = %v, want io.ErrUnexpectedEOF", cut, len(full), err)
		}
	}
	// The same after a complete frame.
	two := append(append([]byte(nil), full...), full[:10]...)
	fr := wire.NewReader(bytes.NewReader(two), 0)
	if _, err := fr.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if _, err := fr.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("second frame truncated: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestEOFBetweenFrames(t *testing.T) {
	if _, err := wire.NewReader(bytes.NewReader(nil), 0).ReadFrame(); err != io.EOF {
		t.Fatalf("empty stream: %v, want io.EOF", err)
	}
	stream, _ := wire.AppendFrame(nil, []byte("a"))
	stream, _ = wire.AppendFrame(stream, nil)
	fr := wire.NewReader(bytes.NewReader(stream), 0)
	for i := 0; i < 2; i++ {
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	for i := 0; i < 2; i++ { // EOF is sticky, not turned into something else on a retry
		if _, err := fr.ReadFrame(); err != io.EOF {
			t.Fatalf("read %d after the last frame: %v, want io.EOF", i, err)
		}
	}
}

func TestReadErrorPassedThrough(t *testing.T) {
	boom := errors.New("boom")
	hdr, _ := wire.AppendHeader(nil, 10)
	for _, r := range []io.Reader{
		errReader{boom},
		io.MultiReader(bytes.NewReader(hdr[:1]), errReader{boom}),
		io.MultiReader(bytes.NewReader(hdr), strings.NewReader("abc"), errReader{boom}),
	} {
		if _, err := wire.NewReader(r, 0).ReadFrame(); !errors.Is(err, boom) {
			t.Fatalf("ReadFrame over a failing reader = %v, want %v", err, boom)
		}
	}
}

func TestReaderReusesSmallBuffers(t *testing.T) {
	var stream []byte
	stream, _ = wire.AppendFrame(stream, pattern(100))
	stream, _ = wire.AppendFrame(stream, pattern(50))
	stream, _ = wire.AppendFrame(stream, pattern(5000))
	stream, _ = wire.AppendFrame(stream, pattern(10))
	fr := wire.NewReader(bytes.NewReader(stream), 0)

	fr.ReadFrame()
	c1 := fr.BufferCap()
	fr.ReadFrame()
	if c1 == 0 || fr.BufferCap() != c1 {
		t.Errorf("a 50-byte frame after a 100-byte frame: buffer cap %d, then %d; want the same buffer", c1, fr.BufferCap())
	}
	big, _ := fr.ReadFrame()
	if len(big) != 5000 {
		t.Fatalf("big frame: %d bytes", len(big))
	}
	small, _ := fr.ReadFrame()
	if cap(small) > 4096 {
		t.Errorf("after a 5000-byte frame the reader still uses a buffer of cap %d for a 10-byte frame", cap(small))
	}
	if !bytes.Equal(big, pattern(5000)) {
		t.Error("the 5000-byte frame's bytes were overwritten by the next frame although its buffer was dropped")
	}
}

// countingReader counts the Reads of the stream under it.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// Frames written in one batch are read with few reads of the stream, not two (header, payload) per
// frame, and without allocating per frame.
func TestReaderReadsAhead(t *testing.T) {
	const frames = 200
	var stream []byte
	for i := range frames {
		stream, _ = wire.AppendFrame(stream, pattern(20+i%40))
	}
	src := &countingReader{r: bytes.NewReader(stream)}
	fr := wire.NewReader(src, 0)
	for i := range frames {
		p, err := fr.ReadFrame()
		if err != nil || !bytes.Equal(p, pattern(20+i%40)) {
			t.Fatalf("frame %d: %d bytes, %v", i, len(p), err)
		}
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	// 8,900 bytes: a 512-byte buffer doubling to keepBuf (4,096) takes about five reads.
	if src.reads > 10 {
		t.Errorf("%d frames (%d bytes) took %d reads of the stream, want ≤ 10", frames, len(stream), src.reads)
	}

	var one []byte
	one, _ = wire.AppendFrame(one, pattern(30))
	loop := bytes.Repeat(one, 4096)
	r := bytes.NewReader(loop)
	fr = wire.NewReader(r, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		if r.Len() == 0 {
			r.Reset(loop)
		}
		if _, err := fr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("ReadFrame allocates %.2f times per frame in steady state, want 0", allocs)
	}
}

// pattern returns n deterministic, position-dependent bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Helper()
	r.t.Error("the frame reader read past a too-large header")
	return 0, io.EOF
}

type failWriter struct{ t *testing.T }

func (w failWriter) Write(p []byte) (int, error) {
	w.t.Errorf("unexpected Write of %d bytes", len(p))
	return len(p), nil
}

type countingWriter struct{ calls, n int }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.calls++
	w.n += len(p)
	return len(p), nil
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

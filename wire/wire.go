// Package wire is the lowest layer of the chatd protocol v1: the preamble, length-prefixed frames with a
// hard size limit, and the protobuf envelopes (package chatdpb) that travel inside the encrypted frames.
// It does no I/O policy (deadlines, retries) and no cryptography; docs/protocol.md is the specification.
//
// Byte layout on a chat stream:
//
//	preamble   4 bytes  'C' 'H' 'D' 0x01          (client → server, once, before anything else)
//	frame      3 bytes  big-endian payload length N  (N ≤ MaxFrame; ≤ MaxHandshakeFrame during the handshake)
//	           N bytes  payload: a Noise handshake message, then Noise transport messages each holding
//	                    one protobuf chatdpb.Envelope
package wire

import (
	"errors"
	"fmt"
	"io"
)

// Preamble opens every chat stream. It names the protocol and its version, lets the 443 listener tell a
// chat stream from TLS (first byte 0x16) and HTTP (an ASCII method), and is the Noise prologue, so a
// stream whose preamble was altered fails the handshake.
const Preamble = "CHD\x01"

// Magic is the version-independent part of the preamble.
const Magic = "CHD"

// Version is the protocol version this package speaks, the last byte of the preamble.
const Version = 1

const (
	// HeaderLen is the size of a frame header: a 3-byte big-endian payload length.
	HeaderLen = 3
	// MaxFrame is the largest payload of a frame after the handshake. It is the Noise maximum message
	// size, so one frame is always exactly one Noise transport message. The largest envelope is
	// MaxFrame - 16 (the AEAD tag).
	MaxFrame = 65535
	// MaxEnvelope is the largest plaintext envelope: MaxFrame minus the 16-byte AEAD tag.
	MaxEnvelope = MaxFrame - 16
	// MaxHandshakeFrame is the largest frame accepted while the handshake runs; real handshake
	// messages are under 400 bytes.
	MaxHandshakeFrame = 2048
)

// FrameTooLargeError reports a frame header that announced more than the reader's limit. Nothing was
// allocated for it.
type FrameTooLargeError struct {
	Size, Max int
}

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("wire: frame of %d bytes exceeds the maximum of %d", e.Size, e.Max)
}

// Is makes errors.Is(err, ErrFrameTooLarge) true for a *FrameTooLargeError.
func (e *FrameTooLargeError) Is(target error) bool { return target == ErrFrameTooLarge }

// ReadPreamble reads and checks the 4-byte preamble. It returns ErrBadPreamble when the bytes are not a
// chatd preamble and ErrUnsupportedVersion (wrapped, with the version) when only the version differs.
func ReadPreamble(r io.Reader) error {
	var p [len(Preamble)]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return fmt.Errorf("wire: reading preamble: %w", err)
	}
	return CheckPreamble(p[:])
}

// CheckPreamble checks that b (at least 4 bytes) starts with the chatd v1 preamble.
func CheckPreamble(b []byte) error {
	if len(b) < len(Preamble) || string(b[:len(Magic)]) != Magic {
		return ErrBadPreamble
	}
	if b[len(Magic)] != Version {
		return fmt.Errorf("%w: version %d, this server speaks %d", ErrUnsupportedVersion, b[len(Magic)], Version)
	}
	return nil
}

// LooksLikePreamble reports whether b, the first bytes of a stream (possibly fewer than 4), could be a
// chatd preamble of any version. The 443 multiplexer uses it to route raw chat streams.
func LooksLikePreamble(b []byte) bool {
	n := min(len(b), len(Magic))
	return string(b[:n]) == Magic[:n]
}

// Reader reads frames from a stream. It checks each header against its limit before allocating.
//
// While frames keep coming it reads ahead: one Read of the stream takes as many bytes as are there (up
// to its buffer, at most keepBuf unless a frame is larger), and the frames in them are returned without
// further reads — a batch of frames written at once costs one read system call, not two per frame. A
// Reader that holds no buffer (a new one, or after Release) waits for the next header with none, so an
// idle connection holds no read buffer while it waits; its buffer starts small and doubles while reads
// fill it.
//
// A Reader is not safe for concurrent use; it is owned by the connection's read loop. A struct may hold a
// Reader by value, set to *NewReader(r, max) before its first use.
type Reader struct {
	r        io.Reader
	buf      []byte // buf[off:end] is read ahead and not yet returned
	off, end int32
	max      int32 // ≤ MaxFrame; int32 keeps the struct at 56 bytes (every connection has a Reader)
	hdr      [HeaderLen]byte
	full     bool // the last read filled the buffer: the next one may use a bigger one
}

// keepBuf is the largest buffer a Reader keeps between frames; bigger ones (for a frame larger than it)
// are dropped after use so an idle connection that once received a large frame does not hold it.
const keepBuf = 4096

// firstBuf is the size of a buffer allocated for a frame that arrives at a Reader holding none.
const firstBuf = 512

// NewReader returns a Reader that rejects frames larger than max (MaxFrame when max ≤ 0 or larger).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 || max > MaxFrame {
		max = MaxFrame
	}
	return &Reader{r: r, max: int32(max)}
}

// SetMax changes the frame limit (for example from MaxHandshakeFrame to MaxFrame once the handshake is
// done).
func (fr *Reader) SetMax(max int) {
	if max <= 0 || max > MaxFrame {
		max = MaxFrame
	}
	fr.max = int32(max)
}

// Release drops the read buffer, for a connection about to idle: the next ReadFrame waits for its header
// holding no buffer. A buffer that still holds bytes read ahead is kept (they are the next frames). The
// slice returned by the last ReadFrame stays valid (it is no longer reused).
func (fr *Reader) Release() {
	if fr.off == fr.end {
		fr.buf, fr.off, fr.end, fr.full = nil, 0, 0, false
	}
}

// BufferCap is the capacity of the buffer the Reader holds between frames (0 when it holds none), for
// memory accounting and tests.
func (fr *Reader) BufferCap() int { return cap(fr.buf) }

// ReadFrame reads one frame and returns its payload. The slice is valid until the next call. A header
// announcing more than the limit returns a *FrameTooLargeError without allocating for the payload.
// A stream that ends between frames returns io.EOF; one that ends inside a frame io.ErrUnexpectedEOF.
func (fr *Reader) ReadFrame() ([]byte, error) {
	if fr.off == fr.end {
		fr.off, fr.end = 0, 0
		if cap(fr.buf) > keepBuf {
			fr.buf, fr.full = nil, false
		}
	}
	var h []byte
	switch {
	case fr.buf == nil:
		// Nothing read ahead and no buffer: wait for the header alone (an idle connection).
		if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
			return nil, err
		}
		h = fr.hdr[:]
	default:
		had := fr.end > fr.off
		if err := fr.fill(HeaderLen); err != nil {
			if err == io.EOF && had {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		h = fr.buf[fr.off : fr.off+HeaderLen]
		fr.off += HeaderLen
	}
	n := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if n > int(fr.max) {
		return nil, &FrameTooLargeError{Size: n, Max: int(fr.max)}
	}
	if err := fr.fill(n); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	start := int(fr.off)
	fr.off += int32(n)
	return fr.buf[start : start+n : start+n], nil
}

// fill makes at least need bytes available at buf[off:], reading as many more as one Read gives.
func (fr *Reader) fill(need int) error {
	have := int(fr.end - fr.off)
	if have >= need && fr.buf != nil {
		return nil
	}
	size := cap(fr.buf)
	switch {
	case size == 0:
		size = firstBuf
	case fr.full && size < keepBuf:
		size *= 2
	}
	size = max(size, need)
	if size > cap(fr.buf) {
		nb := make([]byte, size)
		copy(nb, fr.buf[fr.off:fr.end])
		fr.buf = nb
		fr.off, fr.end = 0, int32(have)
	} else if int(fr.off)+need > cap(fr.buf) {
		copy(fr.buf[:cap(fr.buf)], fr.buf[fr.off:fr.end])
		fr.off, fr.end = 0, int32(have)
	}
	fr.buf = fr.buf[:cap(fr.buf)]
	room := fr.buf[fr.end:]
	m, err := io.ReadAtLeast(fr.r, room, need-have)
	fr.end += int32(m)
	fr.full = m == len(room)
	return err
}

// AppendHeader appends the header of a frame with an n-byte payload to dst.
func AppendHeader(dst []byte, n int) ([]byte, error) {
	if n < 0 || n > MaxFrame {
		return dst, &FrameTooLargeError{Size: n, Max: MaxFrame}
	}
	return append(dst, byte(n>>16), byte(n>>8), byte(n)), nil
}

// AppendFrame appends a whole frame (header and payload) to dst.
func AppendFrame(dst, payload []byte) ([]byte, error) {
	dst, err := AppendHeader(dst, len(payload))
	if err != nil {
		return dst, err
	}
	return append(dst, payload...), nil
}

// WriteFrame writes one frame to w in a single Write call.
func WriteFrame(w io.Writer, payload []byte) error {
	b, err := AppendFrame(make([]byte, 0, HeaderLen+len(payload)), payload)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

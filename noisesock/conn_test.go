package noisesock_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// frameSize returns the content size of the i-th test frame: mostly small, sometimes the largest
// envelope, sometimes just over the reader's kept-buffer size.
func frameSize(i int) int {
	switch {
	case i%50 == 7:
		return wire.MaxEnvelope - 64
	case i%10 == 3:
		return 5000
	default:
		return i % 300
	}
}

func sendEnv(i int, dir byte) *chatdpb.Envelope {
	body := bytes.Repeat([]byte{dir ^ byte(i)}, frameSize(i))
	return &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
		ClientId: fmt.Sprintf("%c-%d", dir, i), Content: &chatdpb.Content{Version: 1, Body: body},
	}}}
}

// One reader and one writer goroutine on each side, all four running at once, as in a session.
func TestConcurrentFrames(t *testing.T) {
	e := tcpHandshake(t)
	const n = 300
	deadline := time.Now().Add(testTimeout)
	e.client.NetConn().SetDeadline(deadline)
	e.server.NetConn().SetDeadline(deadline)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	writer := func(c *noisesock.Conn, dir byte) {
		defer wg.Done()
		var out, scratch []byte
		for i := range n {
			var err error
			out, scratch, err = c.AppendEnvelope(out[:0], scratch, sendEnv(i, dir))
			if err != nil {
				errs <- err
				return
			}
			if _, err := c.NetConn().Write(out); err != nil {
				errs <- err
				return
			}
		}
	}
	reader := func(c *noisesock.Conn, dir byte) {
		defer wg.Done()
		env := new(chatdpb.Envelope)
		for i := range n {
			p, err := c.ReadFrame()
			if err != nil {
				errs <- fmt.Errorf("%c frame %d: %w", dir, i, err)
				return
			}
			if err := wire.DecodeEnvelope(p, env); err != nil {
				errs <- fmt.Errorf("%c frame %d: %w", dir, i, err)
				return
			}
			want := sendEnv(i, dir).GetSend()
			got := env.GetSend()
			if got.GetClientId() != want.ClientId || !bytes.Equal(got.GetContent().GetBody(), want.Content.Body) {
				errs <- fmt.Errorf("%c frame %d: got %q with %d bytes, want %q with %d", dir, i,
					got.GetClientId(), len(got.GetContent().GetBody()), want.ClientId, len(want.Content.Body))
				return
			}
		}
	}
	wg.Add(4)
	go writer(e.client, 'c')
	go reader(e.server, 'c')
	go writer(e.server, 's')
	go reader(e.client, 's')
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAppendFrameLimit(t *testing.T) {
	e := tcpHandshake(t)
	// The largest envelope fits one frame.
	out, err := e.client.AppendFrame(nil, make([]byte, wire.MaxEnvelope))
	if err != nil || len(out) != wire.HeaderLen+wire.MaxFrame {
		t.Fatalf("MaxEnvelope plaintext: %d bytes, %v; want a %d-byte frame", len(out), err, wire.HeaderLen+wire.MaxFrame)
	}
	// One more byte is refused without touching dst, and without using up a nonce.
	for _, n := range []int{wire.MaxEnvelope + 1, wire.MaxFrame, 1 << 20} {
		got, err := e.client.AppendFrame([]byte("x"), make([]byte, n))
		var tl *wire.FrameTooLargeError
		if !errors.As(err, &tl) || tl.Size != n || tl.Max != wire.MaxEnvelope {
			t.Fatalf("plaintext of %d: %v, want *FrameTooLargeError{%d, %d}", n, err, n, wire.MaxEnvelope)
		}
		if string(got) != "x" {
			t.Fatalf("plaintext of %d: dst changed to %d bytes", n, len(got))
		}
	}
	big := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{Content: &chatdpb.Content{Body: make([]byte, wire.MaxEnvelope)}}}}
	if _, _, err := e.client.AppendEnvelope(nil, nil, big); !errors.Is(err, wire.ErrFrameTooLarge) {
		t.Fatalf("envelope over MaxEnvelope: %v", err)
	}
	// out (the MaxEnvelope frame) was the only one encrypted; it and a following frame decrypt.
	e.client.NetConn().Write(out)
	if err := writeEnv(e.client, ping(9)); err != nil {
		t.Fatal(err)
	}
	if p, err := e.server.ReadFrame(); err != nil || len(p) != wire.MaxEnvelope {
		t.Fatalf("MaxEnvelope frame: %d bytes, %v", len(p), err)
	}
	if env, err := readEnv(e.server); err != nil || env.GetPing().GetId() != 9 {
		t.Fatalf("frame after refused ones: %v, %v", env, err)
	}
}

func TestAppendEnvelopeReusesScratch(t *testing.T) {
	e := tcpHandshake(t)
	scratch := make([]byte, 0, 1024)
	out, scratch2, err := e.client.AppendEnvelope([]byte("pre"), scratch, ping(5))
	if err != nil {
		t.Fatal(err)
	}
	if &scratch2[:1][0] != &scratch[:1][0] {
		t.Error("AppendEnvelope did not encode into the given scratch buffer")
	}
	if !bytes.HasPrefix(out, []byte("pre")) {
		t.Fatal("AppendEnvelope dropped dst's prefix")
	}
	e.client.NetConn().Write(out[3:])
	if env, err := readEnv(e.server); err != nil || env.GetPing().GetId() != 5 {
		t.Fatalf("%v, %v", env, err)
	}
}

// Every way a transport frame can be altered, replayed, reordered or reflected fails with ErrDecrypt.
func TestTransportTamper(t *testing.T) {
	// frames returns the client's next two encrypted frames, unwritten.
	frames := func(t *testing.T, e *established) (f1, f2 []byte) {
		var err error
		if f1, _, err = e.client.AppendEnvelope(nil, nil, ping(1)); err != nil {
			t.Fatal(err)
		}
		if f2, _, err = e.client.AppendEnvelope(nil, nil, ping(2)); err != nil {
			t.Fatal(err)
		}
		return f1, f2
	}
	flip := func(f []byte, i int) []byte {
		f = bytes.Clone(f)
		f[i] ^= 0x01
		return f
	}
	tests := []struct {
		name string
		wire func(t *testing.T, e *established, f1, f2 []byte) []byte // what reaches the server
		skip int                                                      // frames that read fine first
	}{
		{"flipped first ciphertext byte", func(t *testing.T, e *established, f1, _ []byte) []byte { return flip(f1, wire.HeaderLen) }, 0},
		{"flipped last tag byte", func(t *testing.T, e *established, f1, _ []byte) []byte { return flip(f1, len(f1)-1) }, 0},
		{"flipped byte in the middle", func(t *testing.T, e *established, f1, _ []byte) []byte { return flip(f1, (wire.HeaderLen+len(f1))/2) }, 0},
		{"truncated, header adjusted", func(t *testing.T, e *established, f1, _ []byte) []byte {
			p := f1[wire.HeaderLen : len(f1)-1]
			return frame(t, p)
		}, 0},
		{"extended, header adjusted", func(t *testing.T, e *established, f1, _ []byte) []byte {
			return frame(t, append(bytes.Clone(f1[wire.HeaderLen:]), 0))
		}, 0},
		{"empty frame", func(t *testing.T, e *established, _, _ []byte) []byte { return frame(t, nil) }, 0},
		{"shorter than a tag", func(t *testing.T, e *established, _, _ []byte) []byte { return frame(t, make([]byte, 15)) }, 0},
		{"reordered", func(t *testing.T, e *established, f1, f2 []byte) []byte { return f2 }, 0},
		{"replayed", func(t *testing.T, e *established, f1, _ []byte) []byte { return append(bytes.Clone(f1), f1...) }, 1},
		{"reflected back to its sender", func(t *testing.T, e *established, _, _ []byte) []byte {
			// A frame the server itself encrypted, sent back to the server.
			f, _, err := e.server.AppendEnvelope(nil, nil, ping(1))
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, 0},
		{"from another session", func(t *testing.T, e *established, _, _ []byte) []byte {
			other := tcpHandshake(t)
			f, _, err := other.client.AppendEnvelope(nil, nil, ping(1))
			if err != nil {
				t.Fatal(err)
			}
			return f
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tcpHandshake(t)
			f1, f2 := frames(t, e)
			if _, err := e.client.NetConn().Write(tt.wire(t, e, f1, f2)); err != nil {
				t.Fatal(err)
			}
			e.server.NetConn().SetReadDeadline(time.Now().Add(testTimeout))
			for i := range tt.skip {
				if _, err := e.server.ReadFrame(); err != nil {
					t.Fatalf("frame %d before the bad one: %v", i, err)
				}
			}
			p, err := e.server.ReadFrame()
			if !errors.Is(err, noisesock.ErrDecrypt) {
				t.Fatalf("ReadFrame = %d bytes, %v; want ErrDecrypt", len(p), err)
			}
		})
	}
	// The untampered frames do decrypt (the test above is not failing for another reason).
	e := tcpHandshake(t)
	f1, f2 := frames(t, e)
	e.client.NetConn().Write(append(f1, f2...))
	for i := uint64(1); i <= 2; i++ {
		if env, err := readEnv(e.server); err != nil || env.GetPing().GetId() != i {
			t.Fatalf("frame %d: %v, %v", i, env, err)
		}
	}
}

// After the handshake the limit is MaxFrame: a bigger header is refused before reading it, and a
// frame between the handshake limit and MaxFrame is accepted.
func TestTransportFrameLimit(t *testing.T) {
	e := tcpHandshake(t)
	e.server.NetConn().SetReadDeadline(time.Now().Add(testTimeout))
	e.client.NetConn().Write([]byte{0x01, 0x00, 0x00})
	_, err := e.server.ReadFrame()
	var tl *wire.FrameTooLargeError
	if !errors.As(err, &tl) || tl.Size != wire.MaxFrame+1 || tl.Max != wire.MaxFrame {
		t.Fatalf("header announcing MaxFrame+1: %v", err)
	}

	e = tcpHandshake(t)
	if err := writeEnv(e.server, sendEnv(7, 's')); err != nil { // ~64 KiB, far over MaxHandshakeFrame
		t.Fatal(err)
	}
	e.client.NetConn().SetReadDeadline(time.Now().Add(testTimeout))
	if p, err := e.client.ReadFrame(); err != nil || len(p) < wire.MaxHandshakeFrame {
		t.Fatalf("client reading a %d-byte envelope: %d bytes, %v", frameSize(7), len(p), err)
	}
}

func TestReadFrameEOF(t *testing.T) {
	e := tcpHandshake(t)
	f, _, _ := e.client.AppendEnvelope(nil, nil, ping(1))
	e.client.NetConn().Write(f[:len(f)-5])
	e.client.Close()
	if _, err := e.server.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated transport frame then close: %v, want io.ErrUnexpectedEOF", err)
	}
}

package noisesock

import (
	"net"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/wire"
)

// hookConn calls hook before every Read, on the reading goroutine.
type hookConn struct {
	net.Conn
	hook func()
}

func (c *hookConn) Read(p []byte) (int, error) {
	c.hook()
	return c.Conn.Read(p)
}

// wire.Reader releases a payload buffer over 4 KiB before it waits for the next frame, so an idle
// connection that once got a large frame does not hold it. Conn.ReadFrame decrypts in that buffer and
// keeps no plaintext buffer of its own, so while it waits for the frame after a 64 KiB one the Conn
// holds at most 4 KiB.
func TestReadFrameDropsLargePlaintextBeforeWaiting(t *testing.T) {
	cnc, snc := loopbackPair(t)
	var srv *Conn
	var caps []int // the read buffer's capacity at each Read of the underlying connection
	hooked := &hookConn{Conn: snc, hook: func() {
		if srv != nil {
			caps = append(caps, srv.fr.BufferCap())
		}
	}}
	cli, srv := connPair(t, cnc, hooked)
	srv.NetConn().SetReadDeadline(time.Now().Add(20 * time.Second))

	big, err := cli.AppendFrame(nil, make([]byte, wire.MaxEnvelope))
	if err != nil {
		t.Fatal(err)
	}
	small, _ := cli.AppendFrame(nil, []byte("x"))
	if _, err := cnc.Write(append(big, small...)); err != nil {
		t.Fatal(err)
	}
	if p, err := srv.ReadFrame(); err != nil || len(p) != wire.MaxEnvelope {
		t.Fatalf("big frame: %d bytes, %v", len(p), err)
	}
	caps = nil
	if p, err := srv.ReadFrame(); err != nil || string(p) != "x" {
		t.Fatalf("small frame: %q, %v", p, err)
	}
	if len(caps) == 0 || caps[0] > 4096 {
		t.Fatalf("while waiting for the frame after a %d-byte one, the Conn held a read buffer of cap %v, want ≤ 4096",
			wire.MaxEnvelope, caps)
	}
}

package noisesock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
)

// Client and Server say they add ctx's error to a failure caused by ctx. They apply ctx's deadline to
// the connection and also watch ctx; when the connection's deadline fires first (which is a race
// between two timers set to the same instant) ctx.Err() is still nil and the error is a bare
// "i/o timeout" that does not match context.DeadlineExceeded. Observed in ~40% of runs.
func TestHandshakeDeadlineErrorNamesContext(t *testing.T) {
	for _, tt := range silentPeers {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 20 { // the bug is a race; 20 tries make a miss all but impossible
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				err := tt.run(t, ctx)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "deadline") {
					t.Fatalf("try %d: err = %q, want it to wrap context.DeadlineExceeded and mention the deadline", i, err)
				}
			}
		})
	}
}

// cancelOnLastWrite is a client connection that cancels the handshake's context right after the
// client's last handshake write (msg3) and waits until the context watcher has applied its
// "deadline in the past" before letting Client return: the handshake succeeds just as ctx ends.
type cancelOnLastWrite struct {
	net.Conn
	cancel context.CancelFunc
	writes int
	past   chan struct{}
	once   sync.Once
}

func (c *cancelOnLastWrite) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.writes++
	if c.writes == 2 { // 1: preamble + msg1, 2: msg3
		c.cancel()
		select {
		case <-c.past:
		case <-time.After(testTimeout):
		}
	}
	return n, err
}

func (c *cancelOnLastWrite) SetDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		c.once.Do(func() { close(c.past) })
	}
	return c.Conn.SetDeadline(t)
}

// "nc's deadline is cleared on success": when ctx ends just as the handshake completes, Client
// returns a Conn whose connection still has the watcher's deadline in the past, so the session's
// first read fails with an i/o timeout. Either the handshake must fail with ctx's error, or the
// returned Conn must work.
func TestHandshakeSuccessAsContextEnds(t *testing.T) {
	cnc, snc := tcpPair(t)
	serverKey := newKey(t)
	srv := runServer(context.Background(), snc, noisesock.ServerConfig{StaticKey: serverKey})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := &cancelOnLastWrite{Conn: cnc, cancel: cancel, past: make(chan struct{})}
	c, _, err := noisesock.Client(ctx, cc, noisesock.ClientConfig{DeviceKey: newKey(t), ServerKey: serverKey.Public, Hello: testHello()})
	r := recv(t, srv)
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Client failed without the context error: %v", err)
		}
		return // acceptable: the handshake is reported as cancelled
	}
	if err := writeEnv(r.conn, ping(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := readEnv(c); err != nil {
		t.Fatalf("Client succeeded, but its Conn cannot read: %v", err)
	}
}

// A client whose msg1 carries a low-order (all-zero) ephemeral key is a bad handshake message from
// the peer, like any other: Server must report ErrHandshake so the session layer counts it as
// HANDSHAKE_FAILED. Today the X25519 failure surfaces from WriteMessage as "writing handshake
// message 2: crypto/ecdh: bad X25519 remote ECDH input: low order point", which does not match
// ErrHandshake.
func TestServerLowOrderEphemeral(t *testing.T) {
	cnc, snc := tcpPair(t)
	srv := runServer(context.Background(), snc, noisesock.ServerConfig{StaticKey: newKey(t)})
	cnc.Write(append([]byte(wire.Preamble), frame(t, make([]byte, 32))...))
	if r := recv(t, srv); !errors.Is(r.err, noisesock.ErrHandshake) {
		t.Fatalf("msg1 with an all-zero ephemeral key: %v, want ErrHandshake", r.err)
	}
}

// The behaviour behind TestServerLowOrderEphemeral, asserted as it is today so that a change is
// noticed: the server fails (it never completes such a handshake).
func TestServerLowOrderEphemeralFails(t *testing.T) {
	cnc, snc := tcpPair(t)
	srv := runServer(context.Background(), snc, noisesock.ServerConfig{StaticKey: newKey(t)})
	cnc.Write(append([]byte(wire.Preamble), frame(t, make([]byte, 32))...))
	if r := recv(t, srv); r.err == nil || r.conn != nil {
		t.Fatalf("server accepted an all-zero ephemeral key: %v", r.err)
	}
}

// The standard-library DH must compute exactly what flynn/noise's own 25519 does: same public keys,
// same shared secrets, and the same refusal of low-order points.
func TestDHMatchesNoiseDH25519(t *testing.T) {
	ours := noisesock.CipherSuite
	theirs := noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)
	for range 50 {
		seed := make([]byte, 32)
		rand.Read(seed)
		a, err := ours.GenerateKeypair(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		b, err := theirs.GenerateKeypair(bytes.NewReader(seed))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Public, b.Public) {
			t.Fatalf("public keys differ for the same private key")
		}
		peer, _ := theirs.GenerateKeypair(rand.Reader)
		s1, err1 := ours.DH(a.Private, peer.Public)
		s2, err2 := theirs.DH(b.Private, peer.Public)
		if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
			t.Fatalf("shared secrets differ: %x %v / %x %v", s1, err1, s2, err2)
		}
	}
	k, _ := ours.GenerateKeypair(rand.Reader)
	if _, err := ours.DH(k.Private, make([]byte, 32)); err == nil {
		t.Fatal("a low-order public key was accepted")
	}
}

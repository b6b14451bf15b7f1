package noisesock_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
)

// A Conn's transport frames are flynn/noise's: after a handshake with the mirror (flynn/noise
// throughout), frames the mirror's CipherStates encrypt decrypt with the Conn and the other way
// round, in both roles, also across ReleaseRead and ReleaseWrite.
func TestTransportInteroperatesWithNoise(t *testing.T) {
	t.Run("mirror client, real server", func(t *testing.T) {
		cnc, snc := tcpPair(t)
		clientKey, serverKey := newKey(t), newKey(t)
		srv := runServer(context.Background(), snc, noisesock.ServerConfig{StaticKey: serverKey})
		m := newMirror(t, true, wire.Preamble, clientKey)
		if _, err := cnc.Write(append([]byte(wire.Preamble), frame(t, m.write(t, nil))...)); err != nil {
			t.Fatal(err)
		}
		cnc.SetReadDeadline(time.Now().Add(testTimeout))
		fr := wire.NewReader(cnc, wire.MaxHandshakeFrame)
		msg2, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.read(msg2); err != nil {
			t.Fatal(err)
		}
		hello, err := proto.Marshal(testHello())
		if err != nil {
			t.Fatal(err)
		}
		msg3, send, recvCS, err := m.hs.WriteMessage(nil, hello)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cnc.Write(frame(t, msg3)); err != nil {
			t.Fatal(err)
		}
		r := recv(t, srv)
		if r.err != nil {
			t.Fatal(r.err)
		}
		fr.SetMax(wire.MaxFrame)
		exchangeWithNoise(t, r.conn, snc, cnc, fr, send, recvCS)
	})
	t.Run("real client, mirror server", func(t *testing.T) {
		cnc, snc := tcpPair(t)
		serverKey := newKey(t)
		m := newMirror(t, false, wire.Preamble, serverKey)
		type states struct {
			send, recv *noise.CipherState
			fr         *wire.Reader
			err        error
		}
		done := make(chan states, 1)
		go func() {
			snc.SetDeadline(time.Now().Add(testTimeout))
			fail := func(err error) { done <- states{err: err} }
			if err := wire.ReadPreamble(snc); err != nil {
				fail(err)
				return
			}
			fr := wire.NewReader(snc, wire.MaxHandshakeFrame)
			msg1, err := fr.ReadFrame()
			if err != nil {
				fail(err)
				return
			}
			if _, err := m.read(msg1); err != nil {
				fail(err)
				return
			}
			msg2, _, _, err := m.hs.WriteMessage(nil, nil)
			if err != nil {
				fail(err)
				return
			}
			if out, err := wire.AppendFrame(nil, msg2); err != nil {
				fail(err)
				return
			} else if _, err := snc.Write(out); err != nil {
				fail(err)
				return
			}
			msg3, err := fr.ReadFrame()
			if err != nil {
				fail(err)
				return
			}
			_, c2s, s2c, err := m.hs.ReadMessage(nil, msg3)
			fr.SetMax(wire.MaxFrame)
			done <- states{send: s2c, recv: c2s, fr: fr, err: err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		cli, _, err := noisesock.Client(ctx, cnc, noisesock.ClientConfig{DeviceKey: newKey(t), ServerKey: serverKey.Public, Hello: testHello()})
		if err != nil {
			t.Fatal(err)
		}
		st := recv(t, done)
		if st.err != nil {
			t.Fatalf("mirror server: %v", st.err)
		}
		exchangeWithNoise(t, cli, cnc, snc, st.fr, st.send, st.recv)
	})
}

// exchangeWithNoise sends frames of several sizes both ways between c (on nc) and flynn/noise's
// CipherStates send and recv (on peer, read with fr), releasing c's ciphers on the way.
func exchangeWithNoise(t *testing.T, c *noisesock.Conn, nc, peer net.Conn, fr *wire.Reader, send, recv *noise.CipherState) {
	t.Helper()
	nc.SetDeadline(time.Now().Add(testTimeout))
	peer.SetDeadline(time.Now().Add(testTimeout))
	for i, size := range []int{0, 1, 200, 4000, wire.MaxEnvelope, 7, 200} {
		msg := bytes.Repeat([]byte{byte(i + 1)}, size)
		// flynn/noise → Conn.
		ct, err := send.Encrypt(nil, nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		out, err := wire.AppendFrame(nil, ct)
		if err != nil {
			t.Fatal(err)
		}
		go peer.Write(out) // a 64 KiB frame may not fit the socket buffers while nobody reads
		p, err := c.ReadFrame()
		if err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("frame %d (%d bytes) from flynn/noise: %d bytes, %v", i, size, len(p), err)
		}
		// Conn → flynn/noise.
		if out, err = c.AppendFrame(nil, msg); err != nil {
			t.Fatal(err)
		}
		go nc.Write(out)
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, err = recv.Decrypt(nil, nil, f); err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("frame %d (%d bytes) to flynn/noise: %d bytes, %v", i, size, len(p), err)
		}
		if i%2 == 1 {
			c.ReleaseRead()
			c.ReleaseWrite()
		}
	}
	if send.Nonce() == 0 {
		t.Fatal("no frame sent")
	}
}

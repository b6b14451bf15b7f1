package noisesock_test

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// serveLoop runs server handshakes one after another on snc until it fails (the client hung up).
// active, when not nil, is the server's time spent running, as measured by an activeConn.
func serveLoop(snc net.Conn, key noisesock.Keypair, ac *activeConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for {
			if ac != nil {
				ac.resume()
			}
			if err := wire.ReadPreamble(snc); err != nil {
				done <- err
				return
			}
			_, _, err := noisesock.Server(ctx, snc, noisesock.ServerConfig{StaticKey: key})
			if ac != nil {
				ac.pause()
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// BenchmarkHandshake runs full client and server handshakes, one after another on one connection.
// ns/op is the latency of one handshake with both sides on their own goroutines.
func BenchmarkHandshake(b *testing.B) {
	conns := []struct {
		name string
		pair func(b *testing.B) (net.Conn, net.Conn)
	}{
		{"tcp", func(b *testing.B) (net.Conn, net.Conn) { return tcpPair(b) }},
		{"pipe", func(b *testing.B) (net.Conn, net.Conn) { return net.Pipe() }},
		{"mem", func(b *testing.B) (net.Conn, net.Conn) { x, y := memPair(); return x, y }},
	}
	for _, cc := range conns {
		b.Run(cc.name, func(b *testing.B) {
			cnc, snc := cc.pair(b)
			clientKey, serverKey := newKey(b), newKey(b)
			srv := serveLoop(snc, serverKey, nil)
			cfg := noisesock.ClientConfig{DeviceKey: clientKey, ServerKey: serverKey.Public, Hello: testHello()}
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a deadline, as in real use
			defer cancel()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if _, _, err := noisesock.Client(ctx, cnc, cfg); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "handshakes/s")
			cnc.Close()
			<-srv
			snc.Close()
		})
	}
}

// activeConn measures the time its reader spends outside Read, i.e. running rather than waiting
// for the peer. Writes must not block (memConn) for this to be CPU time.
type activeConn struct {
	net.Conn
	since  time.Time
	active time.Duration
}

func (c *activeConn) resume() { c.since = time.Now() }
func (c *activeConn) pause()  { c.active += time.Since(c.since) }

func (c *activeConn) Read(p []byte) (int, error) {
	c.pause()
	n, err := c.Conn.Read(p)
	c.resume()
	return n, err
}

// BenchmarkHandshakeServerSide isolates the server's share of a handshake.
//
// "one-goroutine" runs both sides of the chatd handshake (Noise XX, the chatd prologue, hellos,
// framing) in a single goroutine on in-memory buffers, built on flynn/noise like the package (the
// mirror; TestMirrorInteroperates shows it speaks the same protocol), and times each side's steps.
// With XX the client's messages cannot be precomputed, since msg3 depends on the server's fresh
// ephemeral key.
//
// "real-server" runs the real Client and Server on their own goroutines over non-blocking in-memory
// connections and reports the time the Server goroutine spent running (outside Read).
func BenchmarkHandshakeServerSide(b *testing.B) {
	clientKey, serverKey := newKey(b), newKey(b)
	helloBytes, _ := proto.Marshal(testHello())

	b.Run("one-goroutine", func(b *testing.B) {
		b.ReportAllocs()
		var serverTime, clientTime time.Duration
		var wireBuf bytes.Buffer
		n := 0
		for b.Loop() {
			// Client: preamble + msg1.
			t0 := time.Now()
			chs := newMirror(b, true, wire.Preamble, clientKey)
			msg1, _, _, err := chs.hs.WriteMessage(nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			out := append(make([]byte, 0, 64), wire.Preamble...)
			out, _ = wire.AppendFrame(out, msg1)
			wireBuf.Write(out)

			// Server: preamble, msg1, msg2.
			t1 := time.Now()
			if err := wire.ReadPreamble(&wireBuf); err != nil {
				b.Fatal(err)
			}
			sfr := wire.NewReader(&wireBuf, wire.MaxHandshakeFrame)
			shs := newMirror(b, false, wire.Preamble, serverKey)
			in, err := sfr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			if _, _, _, err := shs.hs.ReadMessage(nil, in); err != nil {
				b.Fatal(err)
			}
			sh, _ := proto.Marshal(&chatdpb.ServerHello{ProtocolVersion: wire.Version, ServerTimeMs: time.Now().UnixMilli()})
			msg2, _, _, err := shs.hs.WriteMessage(nil, sh)
			if err != nil {
				b.Fatal(err)
			}
			out, _ = wire.AppendFrame(out[:0], msg2)
			wireBuf.Write(out)

			// Client: msg2, pin check, msg3.
			t2 := time.Now()
			cfr := wire.NewReader(&wireBuf, wire.MaxHandshakeFrame)
			in, err = cfr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			payload, _, _, err := chs.hs.ReadMessage(nil, in)
			if err != nil {
				b.Fatal(err)
			}
			if subtle.ConstantTimeCompare(chs.hs.PeerStatic(), serverKey.Public[:]) != 1 {
				b.Fatal("server key mismatch")
			}
			if err := proto.Unmarshal(payload, new(chatdpb.ServerHello)); err != nil {
				b.Fatal(err)
			}
			msg3, _, _, err := chs.hs.WriteMessage(nil, helloBytes)
			if err != nil {
				b.Fatal(err)
			}
			out, _ = wire.AppendFrame(out[:0], msg3)
			wireBuf.Write(out)

			// Server: msg3.
			t3 := time.Now()
			in, err = sfr.ReadFrame()
			if err != nil {
				b.Fatal(err)
			}
			payload, _, _, err = shs.hs.ReadMessage(nil, in)
			if err != nil {
				b.Fatal(err)
			}
			if err := proto.Unmarshal(payload, new(chatdpb.ClientHello)); err != nil {
				b.Fatal(err)
			}
			t4 := time.Now()

			clientTime += t1.Sub(t0) + t3.Sub(t2)
			serverTime += t2.Sub(t1) + t4.Sub(t3)
			n++
		}
		b.ReportMetric(float64(serverTime.Nanoseconds())/float64(n), "server-ns/op")
		b.ReportMetric(float64(clientTime.Nanoseconds())/float64(n), "client-ns/op")
		b.ReportMetric(float64(n)/serverTime.Seconds(), "server-handshakes/s/core")
	})

	b.Run("real-server", func(b *testing.B) {
		cnc, snc := memPair()
		ac := &activeConn{Conn: snc}
		srv := serveLoop(ac, serverKey, ac)
		cfg := noisesock.ClientConfig{DeviceKey: clientKey, ServerKey: serverKey.Public, Hello: testHello()}
		n := 0
		for b.Loop() {
			if _, _, err := noisesock.Client(context.Background(), cnc, cfg); err != nil {
				b.Fatal(err)
			}
			n++
		}
		cnc.Close()
		<-srv // the server's time is read after its goroutine is done
		b.ReportMetric(float64(ac.active.Nanoseconds())/float64(n), "server-ns/op")
		b.ReportMetric(float64(n)/ac.active.Seconds(), "server-handshakes/s/core")
	})
}

// sendOfSize returns a Send envelope whose encoding is exactly n bytes.
func sendOfSize(b testing.TB, n int) *chatdpb.Envelope {
	env := &chatdpb.Envelope{Body: &chatdpb.Envelope_Send{Send: &chatdpb.Send{
		ClientId: "c-0001-6b1d2f", To: "4915187654321", Content: &chatdpb.Content{Version: 1},
	}}}
	body := n
	for range 10 {
		env.GetSend().Content.Body = bytes.Repeat([]byte("x"), max(body, 0))
		size := proto.Size(env)
		if size == n {
			return env
		}
		body += n - size
	}
	b.Fatalf("no envelope of exactly %d bytes", n)
	return nil
}

// BenchmarkTransportFrame is one envelope through an established session: encode, encrypt and frame
// on one side, read the frame and decrypt (and decode) on the other, over an in-memory connection.
func BenchmarkTransportFrame(b *testing.B) {
	for _, size := range []int{200, 4000} {
		for _, decode := range []bool{false, true} {
			name := fmt.Sprintf("envelope=%d/seal+open", size)
			if decode {
				name += "+decode"
			}
			b.Run(name, func(b *testing.B) {
				cnc, snc := memPair()
				e := handshake(b, cnc, snc)
				env := sendOfSize(b, size)
				var out, scratch []byte
				got := new(chatdpb.Envelope)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					out, scratch, err = e.client.AppendEnvelope(out[:0], scratch, env)
					if err != nil {
						b.Fatal(err)
					}
					cnc.Write(out)
					p, err := e.server.ReadFrame()
					if err != nil || len(p) != size {
						b.Fatalf("%d bytes, %v", len(p), err)
					}
					if decode {
						if err := wire.DecodeEnvelope(p, got); err != nil {
							b.Fatal(err)
						}
					}
				}
				cnc.Close()
			})
		}
	}
}

package noisesock_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// testTimeout bounds every wait in these tests; nothing should come close to it.
const testTimeout = 20 * time.Second

func newKey(t testing.TB) noisesock.Keypair {
	t.Helper()
	k, err := noisesock.GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testHello() *chatdpb.ClientHello {
	return &chatdpb.ClientHello{
		ProtocolVersion: wire.Version, ClientVersion: "chat/0.1.0-test", PingIntervalMs: 25000, Probe: true, Path: "tcp:5222",
	}
}

// tcpPair returns both ends of a fresh loopback TCP connection. Both are closed at the end of the test.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.DialTimeout("tcp", ln.Addr().String(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		client.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

type serverResult struct {
	conn  *noisesock.Conn
	hello *chatdpb.ClientHello
	err   error
}

// runServer runs the server side as the chat listener does: read and check the preamble, then
// Server. The result arrives on the returned channel.
func runServer(ctx context.Context, nc net.Conn, cfg noisesock.ServerConfig) <-chan serverResult {
	ch := make(chan serverResult, 1)
	go func() {
		if err := wire.ReadPreamble(nc); err != nil {
			ch <- serverResult{err: err}
			return
		}
		c, h, err := noisesock.Server(ctx, nc, cfg)
		ch <- serverResult{c, h, err}
	}()
	return ch
}

func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

type established struct {
	client, server       *noisesock.Conn
	clientKey, serverKey noisesock.Keypair
	clientHello          *chatdpb.ClientHello
	serverHello          *chatdpb.ServerHello
}

// handshake runs a real client and server handshake over client and server.
func handshake(t testing.TB, client, server net.Conn) *established {
	t.Helper()
	e := &established{clientKey: newKey(t), serverKey: newKey(t)}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	srv := runServer(ctx, server, noisesock.ServerConfig{StaticKey: e.serverKey})
	type clientResult struct {
		c   *noisesock.Conn
		sh  *chatdpb.ServerHello
		err error
	}
	cli := make(chan clientResult, 1)
	go func() {
		c, sh, err := noisesock.Client(ctx, client, noisesock.ClientConfig{DeviceKey: e.clientKey, ServerKey: e.serverKey.Public, Hello: testHello()})
		cli <- clientResult{c, sh, err}
	}()
	var r serverResult
	select {
	case r = <-srv:
		if r.err != nil {
			client.Close() // do not leave the client waiting for a server that gave up
			t.Fatalf("Server: %v (client: %v)", r.err, recv(t, cli).err)
		}
	case <-time.After(testTimeout):
		t.Fatal("server handshake timed out")
	}
	cr := recv(t, cli)
	if cr.err != nil {
		t.Fatalf("Client: %v", cr.err)
	}
	e.client, e.server, e.clientHello, e.serverHello = cr.c, r.conn, r.hello, cr.sh
	return e
}

func tcpHandshake(t testing.TB) *established {
	t.Helper()
	c, s := tcpPair(t)
	return handshake(t, c, s)
}

// writeEnv encodes, encrypts and writes one envelope.
func writeEnv(c *noisesock.Conn, env *chatdpb.Envelope) error {
	out, _, err := c.AppendEnvelope(nil, nil, env)
	if err != nil {
		return err
	}
	_, err = c.NetConn().Write(out)
	return err
}

func readEnv(c *noisesock.Conn) (*chatdpb.Envelope, error) {
	p, err := c.ReadFrame()
	if err != nil {
		return nil, err
	}
	env := new(chatdpb.Envelope)
	return env, wire.DecodeEnvelope(p, env)
}

func ping(id uint64) *chatdpb.Envelope {
	return &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: id}}}
}

// mirror is a second implementation of the chatd handshake, built directly on flynn/noise with the
// configuration docs/protocol.md fixes. Tests use it to play a misbehaving peer; a test checks it
// interoperates with the real Client and Server, so it is a faithful mirror.
type mirror struct {
	hs *noise.HandshakeState
}

func newMirror(t testing.TB, initiator bool, prologue string, static noisesock.Keypair) *mirror {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   noisesock.CipherSuite,
		Pattern:       noise.HandshakeXX,
		Initiator:     initiator,
		Prologue:      []byte(prologue),
		StaticKeypair: noise.DHKey{Private: static.Private[:], Public: static.Public[:]},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &mirror{hs: hs}
}

func (m *mirror) write(t testing.TB, payload proto.Message) []byte {
	t.Helper()
	var p []byte
	if payload != nil {
		var err error
		if p, err = proto.Marshal(payload); err != nil {
			t.Fatal(err)
		}
	}
	msg, _, _, err := m.hs.WriteMessage(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func (m *mirror) read(msg []byte) ([]byte, error) {
	p, _, _, err := m.hs.ReadMessage(nil, msg)
	return p, err
}

func frame(t testing.TB, payload []byte) []byte {
	t.Helper()
	f, err := wire.AppendFrame(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// recConn records the bytes read from and written to a net.Conn.
type recConn struct {
	net.Conn
	mu          sync.Mutex
	read, wrote bytes.Buffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.wrote.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// memConn is one end of an in-memory, unbounded, buffered connection: writes never block, reads
// block until data arrives or the peer closes. For benchmarks that measure CPU, not the kernel.
type memConn struct {
	in, out *memBuf
}

type memBuf struct {
	mu     sync.Mutex
	cond   *sync.Cond
	b      []byte
	off    int
	closed bool
}

func newMemBuf() *memBuf {
	b := &memBuf{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func memPair() (a, b *memConn) {
	x, y := newMemBuf(), newMemBuf()
	return &memConn{in: x, out: y}, &memConn{in: y, out: x}
}

func (c *memConn) Read(p []byte) (int, error) {
	b := c.in
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.off == len(b.b) && !b.closed {
		b.cond.Wait()
	}
	if b.off == len(b.b) {
		return 0, io.EOF
	}
	n := copy(p, b.b[b.off:])
	b.off += n
	if b.off == len(b.b) {
		b.b, b.off = b.b[:0], 0
	}
	return n, nil
}

func (c *memConn) Write(p []byte) (int, error) {
	b := c.out
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, net.ErrClosed
	}
	b.b = append(b.b, p...)
	b.cond.Broadcast()
	return len(p), nil
}

func (c *memConn) Close() error {
	for _, b := range []*memBuf{c.in, c.out} {
		b.mu.Lock()
		b.closed = true
		b.cond.Broadcast()
		b.mu.Unlock()
	}
	return nil
}

func (c *memConn) LocalAddr() net.Addr                { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr               { return memAddr{} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

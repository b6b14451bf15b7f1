package noisesock

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/chatd-dev/chatd/wire"
)

// cipherState is flynn/noise's CipherState for AESGCM, byte for byte: what one encrypts the other
// decrypts, from any starting counter, in both directions, and both seal the same bytes; dropping the
// AEAD between messages changes nothing.
func TestCipherStateMatchesNoise(t *testing.T) {
	var key [32]byte
	rand.Read(key[:])
	sizes := []int{0, 1, 4, 200, 4000, wire.MaxEnvelope}
	for _, start := range []uint64{0, 1, 255, 1 << 32, math.MaxUint64 - uint64(2*len(sizes)) - 1} {
		fEnc := noise.UnsafeNewCipherState(CipherSuite, key, start)
		fDec := noise.UnsafeNewCipherState(CipherSuite, key, start)
		var mEnc, mDec cipherState
		mEnc.init(key, start)
		mDec.init(key, start)
		for i, size := range sizes {
			for j := range 2 { // twice each size, the second time after a release
				pt := make([]byte, size)
				rand.Read(pt)
				want, err := fEnc.Encrypt([]byte("hdr"), nil, pt)
				if err != nil {
					t.Fatal(err)
				}
				got, err := mEnc.seal([]byte("hdr"), pt)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("start %d, message %d (%d bytes): sealed bytes differ from flynn/noise's", start, 2*i+j, size)
				}
				// flynn/noise's message decrypts with ours (in place) ...
				ct := bytes.Clone(want[3:])
				p, err := mDec.open(ct)
				if err != nil || !bytes.Equal(p, pt) {
					t.Fatalf("start %d, message %d: ours failed to open flynn/noise's: %v", start, 2*i+j, err)
				}
				// ... and ours with flynn/noise's.
				p, err = fDec.Decrypt(nil, nil, got[3:])
				if err != nil || !bytes.Equal(p, pt) {
					t.Fatalf("start %d, message %d: flynn/noise failed to open ours: %v", start, 2*i+j, err)
				}
				mEnc.release()
				mDec.release()
			}
		}
		if n := binary64(mEnc.nonce); n != fEnc.Nonce() || binary64(mDec.nonce) != fDec.Nonce() {
			t.Fatalf("start %d: counters %d, %d; flynn/noise's %d, %d", start, n, binary64(mDec.nonce), fEnc.Nonce(), fDec.Nonce())
		}
	}
}

func binary64(nonce [12]byte) uint64 {
	var n uint64
	for _, b := range nonce[4:] {
		n = n<<8 | uint64(b)
	}
	return n
}

// The counter 2^64-1 is reserved: the message with counter 2^64-2 is the last in each direction, as
// with flynn/noise. A message that fails authentication does not advance the counter.
func TestCipherStateNonceLimit(t *testing.T) {
	var key [32]byte
	rand.Read(key[:])
	var enc, dec cipherState
	enc.init(key, math.MaxUint64-2)
	dec.init(key, math.MaxUint64-2)
	f := noise.UnsafeNewCipherState(CipherSuite, key, math.MaxUint64-2)
	for i := range 2 {
		ct, err := enc.seal(nil, []byte("last ones"))
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if _, err := f.Encrypt(nil, nil, []byte("last ones")); err != nil {
			t.Fatalf("flynn/noise, message %d: %v", i, err)
		}
		bad := bytes.Clone(ct)
		bad[0] ^= 1
		if _, err := dec.open(bad); err == nil {
			t.Fatal("a tampered message opened")
		}
		if p, err := dec.open(ct); err != nil || string(p) != "last ones" {
			t.Fatalf("message %d after a tampered one: %q, %v", i, p, err)
		}
	}
	if _, err := f.Encrypt(nil, nil, nil); !errors.Is(err, noise.ErrMaxNonce) {
		t.Fatalf("flynn/noise at 2^64-1: %v", err)
	}
	if out, err := enc.seal([]byte("dst"), []byte("one more")); !errors.Is(err, noise.ErrMaxNonce) || string(out) != "dst" {
		t.Fatalf("seal at 2^64-1: %q, %v; want dst unchanged and ErrMaxNonce", out, err)
	}
	if _, err := dec.open(make([]byte, 32)); !errors.Is(err, noise.ErrMaxNonce) {
		t.Fatalf("open at 2^64-1: %v, want ErrMaxNonce", err)
	}
}

// A Conn holds no cipher until it uses one and none after ReleaseRead and ReleaseWrite, nor a read
// buffer after the handshake or ReleaseRead; frames keep flowing across releases, the counters go on.
func TestConnReleases(t *testing.T) {
	cnc, snc := loopbackPair(t)
	cli, srv := connPair(t, cnc, snc)
	check := func(when string, c *Conn, recv, send bool, buf bool) {
		t.Helper()
		if c.recv.held() != recv || c.send.held() != send || (c.fr.BufferCap() > 0) != buf {
			t.Fatalf("%s: receive cipher %v, send cipher %v, read buffer of cap %d; want %v, %v, buffer %v",
				when, c.recv.held(), c.send.held(), c.fr.BufferCap(), recv, send, buf)
		}
	}
	check("client after the handshake", cli, false, false, false)
	check("server after the handshake", srv, false, false, false)

	exchange := func(i int) {
		t.Helper()
		msg := []byte{byte(i), 'x'}
		out, err := cli.AppendFrame(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cnc.Write(out); err != nil {
			t.Fatal(err)
		}
		if p, err := srv.ReadFrame(); err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("frame %d to the server: %q, %v", i, p, err)
		}
		if out, err = srv.AppendFrame(nil, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := snc.Write(out); err != nil {
			t.Fatal(err)
		}
		if p, err := cli.ReadFrame(); err != nil || !bytes.Equal(p, msg) {
			t.Fatalf("frame %d to the client: %q, %v", i, p, err)
		}
	}
	exchange(0)
	check("server after a frame each way", srv, true, true, true)
	exchange(1)
	srv.ReleaseRead()
	check("server after ReleaseRead", srv, false, true, false)
	srv.ReleaseWrite()
	check("server after ReleaseWrite", srv, false, false, false)
	exchange(2)
	check("server after a frame each way", srv, true, true, true)
	srv.ReleaseRead()
	srv.ReleaseWrite()
	cli.ReleaseRead()
	cli.ReleaseWrite()
	exchange(3)
}

// Close wipes both keys, also while the reader waits in ReadFrame and the writer seals; afterwards
// AppendFrame fails with net.ErrClosed. Run it under -race.
func TestCloseWipesKeys(t *testing.T) {
	cnc, snc := loopbackPair(t)
	cli, srv := connPair(t, cnc, snc)
	readErr := make(chan error, 1)
	go func() {
		_, err := srv.ReadFrame()
		readErr <- err
	}()
	writeErr := make(chan error, 1)
	go func() {
		for {
			if _, err := srv.AppendFrame(nil, []byte("x")); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err == nil {
		t.Fatal("ReadFrame after Close succeeded")
	}
	if err := <-writeErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AppendFrame after Close: %v, want net.ErrClosed", err)
	}
	var zero [32]byte
	srv.recv.mu.Lock()
	srv.send.mu.Lock()
	if srv.recv.key != zero || srv.send.key != zero || srv.recv.aead != nil || srv.send.aead != nil {
		t.Fatal("Close left a key or a cipher")
	}
	srv.send.mu.Unlock()
	srv.recv.mu.Unlock()

	cli.Wipe()
	if _, err := cli.AppendFrame(nil, []byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AppendFrame after Wipe: %v, want net.ErrClosed", err)
	}
	if cli.recv.key != zero || cli.send.key != zero {
		t.Fatal("Wipe left a key")
	}
}

// loopbackPair is a loopback TCP connection; both ends are closed at the end of the test.
func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// connPair runs the handshake on a connection's two ends.
func connPair(t *testing.T, cnc, snc net.Conn) (cli, srv *Conn) {
	t.Helper()
	kc, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	ks, err := GenerateKeypair()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type res struct {
		c   *Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		if err := wire.ReadPreamble(snc); err != nil {
			done <- res{nil, err}
			return
		}
		c, _, err := Server(ctx, snc, ServerConfig{StaticKey: ks})
		done <- res{c, err}
	}()
	cli, _, err = Client(ctx, cnc, ClientConfig{DeviceKey: kc, ServerKey: ks.Public})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return cli, r.c
}

// held reports whether the AEAD is built.
func (cs *cipherState) held() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.aead != nil
}

package noisesock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/wire"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzServerHandshake from real handshakes")

// fuzzServerKey is fixed so that seeds recorded against it stay meaningful across runs.
var fuzzServerKey = noisesock.Keypair{
	Private: [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32},
}

func init() {
	// Public = X25519(Private, basepoint), via the cipher suite.
	k, err := noisesock.CipherSuite.GenerateKeypair(bytes.NewReader(fuzzServerKey.Private[:]))
	if err != nil {
		panic(err)
	}
	copy(fuzzServerKey.Public[:], k.Public)
}

// FuzzServerHandshake plays arbitrary bytes as the client side of a connection (after the preamble,
// which the listener reads before Server) and checks that Server fails: without the server's fresh
// ephemeral key no input can produce a valid msg3, so success would be a bug. Whatever Server
// writes is drained; the client side closes once its bytes are written.
func FuzzServerHandshake(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x00, 0x20})
	f.Add([]byte{0x00, 0x08, 0x01})

	f.Fuzz(func(t *testing.T, data []byte) {
		cnc, snc := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the peer reads everything the server writes
			defer wg.Done()
			io.Copy(io.Discard, cnc)
		}()
		go func() { // and writes data, then hangs up
			defer wg.Done()
			cnc.Write(data)
			cnc.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, hello, err := noisesock.Server(ctx, snc, noisesock.ServerConfig{StaticKey: fuzzServerKey})
		cancel()
		snc.Close()
		wg.Wait()
		if err == nil || c != nil || hello != nil {
			t.Fatalf("Server accepted %d bytes of client input: conn %v, hello %v, err %v", len(data), c, hello, err)
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Server hung on %d bytes of input that end in a hang-up: %v", len(data), err)
		}
	})
}

// recordClient runs a real Client against a real Server over loopback TCP and returns what the
// client wrote after the preamble: msg1 and msg3 frames.
func recordClient(t *testing.T) []byte {
	cnc, snc := tcpPair(t)
	rec := &recConn{Conn: cnc}
	srv := runServer(context.Background(), snc, noisesock.ServerConfig{StaticKey: fuzzServerKey})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, _, err := noisesock.Client(ctx, rec, noisesock.ClientConfig{DeviceKey: newKey(t), ServerKey: fuzzServerKey.Public, Hello: testHello()}); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, srv); r.err != nil {
		t.Fatal(r.err)
	}
	b := rec.wrote.Bytes()
	if !bytes.HasPrefix(b, []byte(wire.Preamble)) {
		t.Fatalf("client did not start with the preamble: % x", b[:4])
	}
	return bytes.Clone(b[len(wire.Preamble):])
}

func fuzzHandshakeSeeds(t *testing.T) map[string][]byte {
	transcript := recordClient(t) // msg1 frame + msg3 frame
	fr := wire.NewReader(bytes.NewReader(transcript), wire.MaxHandshakeFrame)
	msg1, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	msg1 = bytes.Clone(msg1)
	msg3, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	msg1Frame := frame(t, msg1)
	random := make([]byte, 40)
	rand.Read(random)

	seeds := map[string][]byte{
		// A recorded real client: its msg3 was made for another server ephemeral, so it must fail.
		"real_client_replayed":   transcript,
		"real_msg1":              msg1Frame,
		"real_msg1_random_msg3":  append(bytes.Clone(msg1Frame), frame(t, random)...),
		"real_msg1_msg3_flipped": append(bytes.Clone(msg1Frame), frame(t, flipLast(msg3))...),
		"random_40":              frame(t, random),
		"msg1_low_order_key":     frame(t, make([]byte, 32)),
		"msg1_short":             frame(t, msg1[:31]),
		"msg1_with_payload":      frame(t, append(bytes.Clone(msg1), "hello"...)),
		"empty_frame":            frame(t, nil),
		"truncated_msg1":         msg1Frame[:20],
		"truncated_msg3":         transcript[:len(transcript)-7],
		"oversized_handshake":    {0x00, 0x08, 0x01},
		"oversized_ffffff":       {0xff, 0xff, 0xff},
		"preamble_again":         append([]byte(wire.Preamble), msg1Frame...),
		"max_handshake_frame":    frame(t, bytes.Repeat([]byte{0xa5}, wire.MaxHandshakeFrame)),
	}
	return seeds
}

func flipLast(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-1] ^= 1
	return b
}

// TestFuzzServerHandshakeSeeds checks the committed corpus. The seeds hold real handshake messages
// (with random keys), so they are only rewritten on request:
// go test ./noisesock -run TestFuzzServerHandshakeSeeds -update-seeds
func TestFuzzServerHandshakeSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzServerHandshake")
	seeds := fuzzHandshakeSeeds(t)
	if *updateSeeds {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			file := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), file, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name := range seeds {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("seed %s: %v (regenerate with -update-seeds)", name, err)
			continue
		}
		if !strings.HasPrefix(string(b), "go test fuzz v1\n[]byte(\"") {
			t.Errorf("seed %s is not a go test fuzz v1 []byte corpus file", name)
		}
	}
}

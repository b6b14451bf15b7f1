// Package noisesock turns a framed byte stream into an encrypted, authenticated one with the Noise
// protocol: Noise_XX_25519_AESGCM_SHA256, with the chatd preamble as prologue. The client proves its
// device key (its Noise static key); the server proves its static key, which the client has pinned.
//
// The only way to get a *Conn is a finished handshake (Client or Server). After that every frame is one
// Noise transport message; a frame that fails authentication returns ErrDecrypt, after which the Conn
// is unusable and the caller must close it.
//
// Handshake, as frames after the preamble (see docs/protocol.md for the byte layout):
//
//	-> e                                       msg1, empty payload
//	<- e, ee, s, es      + ServerHello         msg2; the client checks s against its pinned key
//	-> s, se             + ClientHello         msg3; the server learns the device key
package noisesock

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"time"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// CipherSuite is the Noise cipher suite of chatd v1.
// It keeps no state, so it is safe to share; handshakes here use newSuite, a copy per handshake
// that saves scalar multiplications (dh.go).
var CipherSuite = noise.NewCipherSuite((*dh25519)(nil), noise.CipherAESGCM, noise.HashSHA256)

// Protocol is the full Noise protocol name, for documentation and logs.
const Protocol = "Noise_XX_25519_AESGCM_SHA256"

// tagLen is the AEAD tag added to every transport message.
const tagLen = 16

// Keypair is an X25519 static key pair (a device key or the server key).
type Keypair = pki.StaticKey

func dhKey(k Keypair) noise.DHKey {
	return noise.DHKey{Private: k.Private[:], Public: k.Public[:]}
}

// KeyMismatchError is returned by Client when the server proved a static key other than the pinned one:
// a man in the middle, or a client configured for another server.
type KeyMismatchError struct {
	Got, Want [32]byte
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("noisesock: server key mismatch: the server proved key %s but this client pins %s "+
		"(a man in the middle, or the client is configured for another server)",
		base64.StdEncoding.EncodeToString(e.Got[:]), base64.StdEncoding.EncodeToString(e.Want[:]))
}

// Is makes errors.Is(err, ErrServerKeyMismatch) true.
func (e *KeyMismatchError) Is(target error) bool { return target == ErrServerKeyMismatch }

// Conn is an established encrypted chat stream. Reading and writing may happen concurrently (one reader
// and one writer goroutine); each side is not safe for concurrent use on its own.
//
// An idle Conn holds little: each direction's cipher (its AES-GCM state) is built on first use and
// dropped again by ReleaseRead and ReleaseWrite, and the read buffer goes with ReleaseRead. Close and
// Wipe zero the transport keys.
type Conn struct {
	// Static after construction.
	nc         net.Conn
	peerStatic [32]byte

	// Owned by the reader; recv is locked so that Wipe and Close may zero it from another goroutine.
	fr   wire.Reader // frames are decrypted in place, in its buffer
	recv cipherState

	// Used by the writer; locked so that ReleaseWrite, Wipe and Close may come from another goroutine.
	send cipherState
}

// newConn returns a Conn on nc whose frame reader accepts handshake frames; the handshake sets the
// cipher states when it is done (established).
func newConn(nc net.Conn) *Conn {
	return &Conn{nc: nc, fr: *wire.NewReader(nc, wire.MaxHandshakeFrame)}
}

// established makes c a transport Conn with the handshake's result: the peer's static key and the
// key and counter of each direction's CipherState. The handshake's buffer is dropped.
func (c *Conn) established(peer []byte, send, recv *noise.CipherState) {
	copy(c.peerStatic[:], peer)
	c.send.fromNoise(send)
	c.recv.fromNoise(recv)
	c.fr.SetMax(wire.MaxFrame)
	c.fr.Release()
}

// NetConn returns the underlying connection (for deadlines, addresses and Close).
func (c *Conn) NetConn() net.Conn { return c.nc }

// PeerStatic returns the peer's proven static key: the device key on the server, the server key on
// the client.
func (c *Conn) PeerStatic() [32]byte { return c.peerStatic }

// Close closes the underlying connection and wipes the transport keys (Wipe). It may be called while
// another goroutine reads or writes: they fail.
func (c *Conn) Close() error {
	err := c.nc.Close()
	c.Wipe()
	return err
}

// Wipe zeroes the transport keys of both directions and drops their ciphers: from then on ReadFrame
// and AppendFrame fail (net.ErrClosed). It does not close the underlying connection (Close does
// both): call it when the connection was closed otherwise and the Conn is done with. It may be called
// from any goroutine, also while another reads or writes.
func (c *Conn) Wipe() {
	c.recv.wipe()
	c.send.wipe()
}

// ReleaseRead drops what the reading side holds between frames, the receive cipher and the read
// buffer, for a connection about to idle; the next ReadFrame builds them again, which costs about a
// microsecond. Call it from the reader (not during a ReadFrame); the slice the last ReadFrame returned
// stays valid.
func (c *Conn) ReleaseRead() {
	c.fr.Release()
	c.recv.release()
}

// ReleaseWrite drops the send cipher, for a connection about to idle; the next AppendFrame builds it
// again, which costs about a microsecond. It may be called from any goroutine, also during an
// AppendFrame.
func (c *Conn) ReleaseWrite() { c.send.release() }

// ReadFrame reads and decrypts one frame. The returned slice is valid until the next ReadFrame. Errors:
// a *wire.FrameTooLargeError, ErrDecrypt, the stream's read error (io.EOF between frames), or
// net.ErrClosed after Wipe.
func (c *Conn) ReadFrame() ([]byte, error) {
	ct, err := c.fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	pt, err := c.recv.open(ct)
	if err != nil {
		if err == net.ErrClosed {
			return nil, err
		}
		return nil, ErrDecrypt
	}
	return pt, nil
}

// AppendFrame encrypts plaintext and appends the whole frame (header and ciphertext) to dst, ready to be
// written. plaintext must not overlap dst's spare capacity.
func (c *Conn) AppendFrame(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > wire.MaxEnvelope {
		return dst, &wire.FrameTooLargeError{Size: len(plaintext), Max: wire.MaxEnvelope}
	}
	out, err := wire.AppendHeader(dst, len(plaintext)+tagLen)
	if err != nil {
		return dst, err
	}
	if out, err = c.send.seal(out, plaintext); err != nil {
		return dst, err
	}
	return out, nil
}

// AppendEnvelope encodes env, encrypts it and appends the frame to dst. scratch is a reusable buffer
// for the plaintext; the (possibly grown) scratch is returned for reuse.
func (c *Conn) AppendEnvelope(dst, scratch []byte, env *chatdpb.Envelope) (out, scratchOut []byte, err error) {
	pt, err := wire.AppendEnvelope(scratch[:0], env)
	if err != nil {
		return dst, scratch, err
	}
	out, err = c.AppendFrame(dst, pt)
	return out, pt, err
}

// ClientConfig configures the client side of the handshake.
type ClientConfig struct {
	// DeviceKey is the client's static key: its identity towards the server.
	DeviceKey Keypair
	// ServerKey is the pinned static public key of the server. Required.
	ServerKey [32]byte
	// Hello is sent, encrypted, in the third handshake message.
	Hello *chatdpb.ClientHello
}

// Client runs the client side of the handshake on nc: it writes the preamble and the three handshake
// messages and returns the encrypted Conn and the server's hello. It honours ctx's deadline and
// cancellation; nc's deadline is cleared on success. On error the caller closes nc.
func Client(ctx context.Context, nc net.Conn, cfg ClientConfig) (*Conn, *chatdpb.ServerHello, error) {
	stop := watch(ctx, nc)
	c, sh, err := clientHandshake(nc, cfg)
	if cerr := stop(); err != nil {
		if cerr != nil {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		return nil, nil, err
	}
	return c, sh, nil
}

func clientHandshake(nc net.Conn, cfg ClientConfig) (*Conn, *chatdpb.ServerHello, error) {
	suite, forget := newSuite()
	defer forget()
	rememberStatic(cfg.DeviceKey.Private)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Pattern:       noise.HandshakeXX,
		Initiator:     true,
		Prologue:      []byte(wire.Preamble),
		StaticKeypair: dhKey(cfg.DeviceKey),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: %w", err)
	}
	// Preamble and msg1 in one write.
	out := append(make([]byte, 0, 64), wire.Preamble...)
	msg1, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: writing handshake message 1: %w", err)
	}
	if out, err = wire.AppendFrame(out, msg1); err != nil {
		return nil, nil, err
	}
	if _, err := nc.Write(out); err != nil {
		return nil, nil, fmt.Errorf("noisesock: sending handshake: %w", err)
	}

	c := newConn(nc)
	msg2, err := c.fr.ReadFrame()
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: reading handshake message 2: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: message 2: %v", ErrHandshake, err)
	}
	var got [32]byte
	copy(got[:], hs.PeerStatic())
	if subtle.ConstantTimeCompare(got[:], cfg.ServerKey[:]) != 1 {
		return nil, nil, &KeyMismatchError{Got: got, Want: cfg.ServerKey}
	}
	sh := new(chatdpb.ServerHello)
	if err := proto.Unmarshal(payload, sh); err != nil {
		return nil, nil, fmt.Errorf("%w: server hello: %v", ErrHandshake, err)
	}

	hello, err := proto.Marshal(cfg.Hello)
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: encoding client hello: %w", err)
	}
	msg3, send, recv, err := hs.WriteMessage(nil, hello)
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: writing handshake message 3: %w", err)
	}
	if err := wire.WriteFrame(nc, msg3); err != nil {
		return nil, nil, fmt.Errorf("noisesock: sending handshake message 3: %w", err)
	}
	c.established(got[:], send, recv)
	return c, sh, nil
}

// ServerConfig configures the server side of the handshake.
type ServerConfig struct {
	// StaticKey is the server's static key, the one clients pin.
	StaticKey Keypair
	// Now stamps the ServerHello; nil means time.Now.
	Now func() time.Time
}

// Server runs the server side of the handshake on nc, whose preamble the caller has already read and
// checked (wire.ReadPreamble). It returns the encrypted Conn and the client's hello; the client's device
// key is Conn.PeerStatic. It honours ctx's deadline and cancellation. On error the caller closes nc.
func Server(ctx context.Context, nc net.Conn, cfg ServerConfig) (*Conn, *chatdpb.ClientHello, error) {
	stop := watch(ctx, nc)
	c, ch, err := serverHandshake(nc, cfg)
	if cerr := stop(); err != nil {
		if cerr != nil {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		return nil, nil, err
	}
	return c, ch, nil
}

func serverHandshake(nc net.Conn, cfg ServerConfig) (*Conn, *chatdpb.ClientHello, error) {
	suite, forget := newSuite()
	defer forget()
	rememberStatic(cfg.StaticKey.Private)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Pattern:       noise.HandshakeXX,
		Initiator:     false,
		Prologue:      []byte(wire.Preamble),
		StaticKeypair: dhKey(cfg.StaticKey),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: %w", err)
	}
	c := newConn(nc)
	msg1, err := c.fr.ReadFrame()
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: reading handshake message 1: %w", err)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
		return nil, nil, fmt.Errorf("%w: message 1: %v", ErrHandshake, err)
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	sh, err := proto.Marshal(&chatdpb.ServerHello{ProtocolVersion: wire.Version, ServerTimeMs: now().UnixMilli()})
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: encoding server hello: %w", err)
	}
	msg2, _, _, err := hs.WriteMessage(nil, sh)
	if err != nil {
		// The only input is the client's ephemeral key (a low-order point fails the ee DH).
		return nil, nil, fmt.Errorf("%w: message 1: %v", ErrHandshake, err)
	}
	if err := wire.WriteFrame(nc, msg2); err != nil {
		return nil, nil, fmt.Errorf("noisesock: sending handshake message 2: %w", err)
	}
	msg3, err := c.fr.ReadFrame()
	if err != nil {
		return nil, nil, fmt.Errorf("noisesock: reading handshake message 3: %w", err)
	}
	payload, recv, send, err := hs.ReadMessage(nil, msg3)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: message 3: %v", ErrHandshake, err)
	}
	ch := new(chatdpb.ClientHello)
	if err := proto.Unmarshal(payload, ch); err != nil {
		return nil, nil, fmt.Errorf("%w: client hello: %v", ErrHandshake, err)
	}
	c.established(hs.PeerStatic(), send, recv)
	return c, ch, nil
}

// watch applies ctx's deadline to nc and unblocks nc's I/O when ctx is cancelled. The returned func
// stops watching and clears the deadline.
func watch(ctx context.Context, nc net.Conn) (stop func() error) {
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		nc.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() error {
		if !cancel() {
			<-fired // ctx ended: wait for the watcher's deadline, then undo it
			nc.SetDeadline(time.Time{})
			return ctx.Err()
		}
		nc.SetDeadline(time.Time{})
		return nil
	}
}

// GenerateKeypair returns a new random X25519 key pair.
func GenerateKeypair() (Keypair, error) { return pki.GenerateStaticKey() }

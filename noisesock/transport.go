package noisesock

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math"
	"net"
	"sync"

	"github.com/flynn/noise"
)

// cipherState is one direction of the transport phase: Noise's CipherState for the AESGCM cipher
// (Noise spec §5.1, §12.4): message n is AES-256-GCM with key k and the 96-bit nonce 0x00000000 ||
// big-endian n, with empty associated data; n = 2^64-1 is reserved, so a direction that reached it
// fails (noise.ErrMaxNonce, as flynn/noise's CipherState). The bytes are exactly those of
// flynn/noise's CipherState, which did this part before.
//
// Idle, it holds the key and the counter: the AEAD (the AES key schedule and the GCM tables, about
// 1.3 KB with its garbage) is built on first use and dropped by release, so an idle connection does
// not keep one per direction for minutes. Building one costs about a microsecond, so release is for
// idle points, not for every frame.
//
// mu serializes the direction's one user (the reader or the writer) with release and wipe, which
// may come from another goroutine; it is never held across I/O.
type cipherState struct {
	mu    sync.Mutex
	wiped bool     // wipe was called: every seal and open fails with net.ErrClosed
	nonce [12]byte // 4 zero bytes and the big-endian counter n: the nonce of the next message
	key   [32]byte
	aead  cipher.AEAD // nil until first use, after release and after wipe
}

// init sets the key and the next nonce: a CipherState after the handshake's Split.
func (cs *cipherState) init(k [32]byte, n uint64) {
	cs.key = k
	binary.BigEndian.PutUint64(cs.nonce[4:], n)
}

// cipher returns the AEAD, built if it is not. Called with mu held.
func (cs *cipherState) cipher() (cipher.AEAD, error) {
	if cs.aead != nil {
		return cs.aead, nil
	}
	if cs.wiped {
		return nil, net.ErrClosed
	}
	b, err := aes.NewCipher(cs.key[:])
	if err != nil {
		return nil, err // unreachable: the key is 32 bytes
	}
	if cs.aead, err = cipher.NewGCM(b); err != nil {
		return nil, err // unreachable: AES has 16-byte blocks
	}
	return cs.aead, nil
}

// next returns the AEAD and the counter of the next message, or an error when the counter reached
// the reserved value or the state was wiped. Called with mu held.
func (cs *cipherState) next() (cipher.AEAD, uint64, error) {
	n := binary.BigEndian.Uint64(cs.nonce[4:])
	if n == math.MaxUint64 {
		return nil, n, noise.ErrMaxNonce
	}
	a, err := cs.cipher()
	return a, n, err
}

// seal appends the encryption of plaintext to dst (ENCRYPT and the counter's increment).
func (cs *cipherState) seal(dst, plaintext []byte) ([]byte, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	a, n, err := cs.next()
	if err != nil {
		return dst, err
	}
	dst = a.Seal(dst, cs.nonce[:], plaintext, nil)
	binary.BigEndian.PutUint64(cs.nonce[4:], n+1)
	return dst, nil
}

// open decrypts and authenticates ciphertext in place and returns the plaintext, a prefix of
// ciphertext. The counter advances only when the message is authentic.
func (cs *cipherState) open(ciphertext []byte) ([]byte, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	a, n, err := cs.next()
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(ciphertext[:0], cs.nonce[:], ciphertext, nil)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint64(cs.nonce[4:], n+1)
	return pt, nil
}

// release drops the AEAD; the next seal or open builds it again.
func (cs *cipherState) release() {
	cs.mu.Lock()
	cs.aead = nil
	cs.mu.Unlock()
}

// wipe zeroes the key and drops the AEAD for good. (The AEAD's key schedule is garbage from then on,
// which the standard library gives no way to zero.)
func (cs *cipherState) wipe() {
	cs.mu.Lock()
	clear(cs.key[:])
	cs.aead = nil
	cs.wiped = true
	cs.mu.Unlock()
}

// fromNoise takes the key and the counter out of a CipherState that the handshake returned; the
// CipherState (and its AEAD) is garbage afterwards.
func (cs *cipherState) fromNoise(s *noise.CipherState) {
	cs.init(s.UnsafeKey(), s.Nonce())
}

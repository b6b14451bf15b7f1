package noisesock

import (
	"crypto/ecdh"
	"crypto/rand"
	"io"
	"sync"

	"github.com/flynn/noise"
)

// dh25519 is Noise's "25519" DH function on the standard library's crypto/ecdh. It computes the same
// values as noise.DH25519.
//
// The cost of a handshake is its X25519 scalar multiplications. ecdh's NewPrivateKey derives the
// public key — one multiplication — so turning private key bytes into an *ecdh.PrivateKey for every
// DH would double the cost (seven multiplications per side instead of four). A dh25519 therefore
// keeps the *ecdh.PrivateKey of the ephemeral key it generated, for the two DHs that use it, and
// static keys registered with rememberStatic are prepared once per process. Use one dh25519 per
// handshake (newSuite); the zero value works but caches nothing.
type dh25519 struct {
	eph *ecdh.PrivateKey // the ephemeral key generated last, nil before
}

// statics holds the prepared static keys ([32]byte private key → *ecdh.PrivateKey): the server's
// static key and a client's device key, which every handshake of the process uses.
var (
	staticsMu sync.RWMutex
	statics   = map[[32]byte]*ecdh.PrivateKey{}
)

// maxStatics bounds statics: a load generator with thousands of device keys prepares only the first
// ones and computes the others per handshake.
const maxStatics = 64

// rememberStatic prepares the static key priv for every later handshake.
func rememberStatic(priv [32]byte) {
	staticsMu.RLock()
	_, ok := statics[priv]
	n := len(statics)
	staticsMu.RUnlock()
	if ok || n >= maxStatics {
		return
	}
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return
	}
	staticsMu.Lock()
	if len(statics) < maxStatics {
		statics[priv] = k
	}
	staticsMu.Unlock()
}

// newSuite returns chatd's cipher suite with a fresh dh25519, for one handshake, and a function that
// drops the ephemeral key it keeps: call it when the handshake is over.
func newSuite() (noise.CipherSuite, func()) {
	d := &dh25519{}
	return noise.NewCipherSuite(d, noise.CipherAESGCM, noise.HashSHA256), func() { d.eph = nil }
}

func (d *dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = rand.Reader
	}
	var priv [32]byte
	if _, err := io.ReadFull(rng, priv[:]); err != nil {
		return noise.DHKey{}, err
	}
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return noise.DHKey{}, err
	}
	if d != nil {
		d.eph = k
	}
	return noise.DHKey{Private: priv[:], Public: k.PublicKey().Bytes()}, nil
}

// privateKey returns the prepared key for privkey, or prepares it (one scalar multiplication).
func (d *dh25519) privateKey(privkey []byte) (*ecdh.PrivateKey, error) {
	if d != nil && d.eph != nil && string(d.eph.Bytes()) == string(privkey) {
		return d.eph, nil
	}
	if len(privkey) == 32 {
		staticsMu.RLock()
		k := statics[[32]byte(privkey)]
		staticsMu.RUnlock()
		if k != nil {
			return k, nil
		}
	}
	return ecdh.X25519().NewPrivateKey(privkey)
}

// DH fails for a low-order public key (an all-zero shared secret), like noise.DH25519.
func (d *dh25519) DH(privkey, pubkey []byte) ([]byte, error) {
	k, err := d.privateKey(privkey)
	if err != nil {
		return nil, err
	}
	p, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, err
	}
	return k.ECDH(p)
}

func (*dh25519) DHLen() int     { return 32 }
func (*dh25519) DHName() string { return "25519" }

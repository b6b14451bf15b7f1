package noisesock

import (
	"crypto/ecdh"
	"crypto/rand"
	"io"

	"github.com/flynn/noise"
)

// dh25519 is Noise's "25519" DH function on the standard library's crypto/ecdh. It computes the same
// values as noise.DH25519, which goes through golang.org/x/crypto/curve25519 and derives the public
// key of the private scalar on every call — twice the scalar multiplications. A handshake is four
// DH operations per side, so this roughly halves its CPU cost.
type dh25519 struct{}

func (dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
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
	return noise.DHKey{Private: priv[:], Public: k.PublicKey().Bytes()}, nil
}

// DH fails for a low-order public key (an all-zero shared secret), like noise.DH25519.
func (dh25519) DH(privkey, pubkey []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(privkey)
	if err != nil {
		return nil, err
	}
	p, err := ecdh.X25519().NewPublicKey(pubkey)
	if err != nil {
		return nil, err
	}
	return k.ECDH(p)
}

func (dh25519) DHLen() int     { return 32 }
func (dh25519) DHName() string { return "25519" }

package main

import (
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
)

// Files in the profile folder.
const (
	profileFile = "profile.json"
	inboxFile   = "inbox.jsonl"
	seenFile    = "seen"
	lockFile    = "lock"
)

// profileVersion is the version of the profile.json format.
const profileVersion = 1

// Profile is profile.json: the registration of one phone number on one server. It holds the device's
// private key: the file is written with mode 0600 and the key never appears in output (secretKey
// prints as "[redacted]").
type Profile struct {
	Version int `json:"version"`
	// Phone is the registered number, E.164 digits without '+'; "" until verified.
	Phone       string `json:"phone,omitempty"`
	Business    bool   `json:"business,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	// Server is the HTTPS URL of the registration/config API, e.g. "https://localhost:8443".
	Server string `json:"server,omitempty"`
	// CAFile, if set, is the (absolute) PEM file of the CA that signs the server's certificate; else
	// the system roots are used.
	CAFile string `json:"ca_file,omitempty"`
	// ServerKey is the pinned Noise static key of the server, standard base64.
	ServerKey string `json:"server_key,omitempty"`
	// ChatEndpoints are the host:port addresses to dial, in order.
	ChatEndpoints []string `json:"chat_endpoints,omitempty"`
	// DeviceKey is the device's X25519 private key (standard base64). Secret.
	DeviceKey    secretKey `json:"device_key,omitzero"`
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// ConfigFetchedAt is when ServerKey and ChatEndpoints were last confirmed by GET /v1/config.
	ConfigFetchedAt time.Time `json:"config_fetched_at,omitzero"`
	// Pending is a code request waiting for "chat register --code".
	Pending *Pending `json:"pending,omitempty"`
}

// Pending is a requested verification code.
type Pending struct {
	Phone       string    `json:"phone"` // normalized by the server
	Server      string    `json:"server"`
	CAFile      string    `json:"ca_file,omitempty"`
	Method      string    `json:"method"`
	RequestedAt time.Time `json:"requested_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Registered reports whether the profile holds a verified registration.
func (p *Profile) Registered() bool {
	return p.Phone != "" && p.Server != "" && p.ServerKey != "" && len(p.ChatEndpoints) > 0 && !p.DeviceKey.zero()
}

// Keys returns the pinned server key and the device key pair.
func (p *Profile) Keys() (server [32]byte, device noisesock.Keypair, err error) {
	server, err = pki.ParseStaticPublic(p.ServerKey)
	if err != nil {
		return server, device, fmt.Errorf("profile: server_key: %w", err)
	}
	device, err = p.DeviceKey.keypair()
	if err != nil {
		return server, device, fmt.Errorf("profile: device_key: %w", err)
	}
	return server, device, nil
}

// secretKey is a private key that marshals as base64 and never prints.
type secretKey [32]byte

func (k secretKey) String() string   { return "[redacted]" }
func (k secretKey) GoString() string { return "[redacted]" }
func (k secretKey) zero() bool       { return k == secretKey{} }

func (k secretKey) MarshalText() ([]byte, error) {
	return []byte(base64.StdEncoding.EncodeToString(k[:])), nil
}

func (k *secretKey) UnmarshalText(b []byte) error {
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil || len(raw) != 32 {
		return errors.New("device_key must be the standard base64 encoding of 32 bytes")
	}
	*k = secretKey(raw)
	return nil
}

func (k secretKey) keypair() (noisesock.Keypair, error) {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		return noisesock.Keypair{}, err
	}
	kp := noisesock.Keypair{Private: k, Public: [32]byte(priv.PublicKey().Bytes())}
	if kp.Public == [32]byte{} {
		return noisesock.Keypair{}, errors.New("device key is degenerate")
	}
	return kp, nil
}

// errNoProfile is wrapped by loadProfile when the folder has no registration.
var errNoProfile = errors.New("no registration")

// loadProfile reads dir/profile.json. A missing file gives an empty profile and an error wrapping
// fs.ErrNotExist.
func loadProfile(dir string) (*Profile, error) {
	data, err := os.ReadFile(filepath.Join(dir, profileFile))
	if err != nil {
		return &Profile{Version: profileVersion}, fmt.Errorf("profile: %w", err)
	}
	var p Profile
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("profile %s is damaged: %w", filepath.Join(dir, profileFile), err)
	}
	if p.Version > profileVersion {
		return nil, fmt.Errorf("profile %s has format version %d; this chat (%s) reads version %d: update chat",
			filepath.Join(dir, profileFile), p.Version, version, profileVersion)
	}
	return &p, nil
}

// loadRegistered loads a profile that holds a registration, or says how to make one.
func loadRegistered(dir string) (*Profile, error) {
	p, err := loadProfile(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil || !p.Registered() {
		hint := "chat register --server https://HOST:8443 --phone +15551234567"
		if p.Pending != nil {
			hint = fmt.Sprintf("a code was sent to %s; finish with: chat register --code CODE", plus(p.Pending.Phone))
		}
		return nil, fmt.Errorf("%w in the profile %s: %s (or choose another profile with --profile or $CHAT_PROFILE)", errNoProfile, dir, hint)
	}
	if _, _, err := p.Keys(); err != nil {
		return nil, fmt.Errorf("profile %s is damaged: %w", filepath.Join(dir, profileFile), err)
	}
	return p, nil
}

// save writes dir/profile.json atomically with mode 0600 (the folder 0700).
func (p *Profile) save(dir string) error {
	p.Version = profileVersion
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, profileFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path through a synced temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

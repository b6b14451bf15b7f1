package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/curve25519"
)

func TestStaticKeyLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "static.key")
	k1, created, err := LoadOrCreateStaticKey(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != StaticKeyPEMType || !bytes.Equal(block.Bytes, k1.Private[:]) {
		t.Fatalf("file is not a %s block with the private key:\n%s", StaticKeyPEMType, data)
	}
	want, _ := curve25519.X25519(k1.Private[:], curve25519.Basepoint)
	if !bytes.Equal(want, k1.Public[:]) {
		t.Fatal("public key is not X25519(priv, basepoint)")
	}

	k2, created, err := LoadOrCreateStaticKey(path)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	if k2 != k1 {
		t.Fatal("second call returned a different key")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the key (temp file left behind?)", len(entries))
	}
}

func TestStaticKeyConcurrentCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "static.key")
	const n = 8
	keys := make([]StaticKey, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { keys[i], created[i], errs[i] = LoadOrCreateStaticKey(path) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if keys[i] != keys[0] {
			t.Fatalf("call %d returned a different key", i)
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Fatalf("%d calls report created, want 1", creators)
	}
}

func TestStaticKeyMalformedFile(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]string{
		"garbage":    "not a key",
		"wrong type": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: make([]byte, 32)})),
		"short":      string(pem.EncodeToMemory(&pem.Block{Type: StaticKeyPEMType, Bytes: make([]byte, 31)})),
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateStaticKey(path)
			if !errors.Is(err, ErrKeyMalformed) {
				t.Fatalf("err = %v, want ErrKeyMalformed", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, _ := os.ReadFile(path)
			if string(after) != content {
				t.Fatal("malformed file was overwritten")
			}
		})
	}
}

func TestStaticKeyNotPrinted(t *testing.T) {
	k, err := GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	priv := FormatPublic(k.Private)
	for _, s := range []string{k.String(), k.GoString()} {
		if strings.Contains(s, priv) || !strings.Contains(s, FormatPublic(k.Public)) {
			t.Fatalf("%q: must show the public key and not the private key", s)
		}
	}
}

func TestParseStaticPublic(t *testing.T) {
	k, err := GenerateStaticKey()
	if err != nil {
		t.Fatal(err)
	}
	s := FormatPublic(k.Public)
	got, err := ParseStaticPublic(" " + s + "\n")
	if err != nil || got != k.Public {
		t.Fatalf("round trip: %v", err)
	}
	bad := map[string]string{
		"empty":     "",
		"not b64":   "!!!!",
		"url b64":   strings.NewReplacer("+", "-", "/", "_").Replace(FormatPublic([32]byte{0xfb, 0xff, 0xfe, 1})),
		"short":     FormatPublic([32]byte{1})[:40],
		"31 bytes":  "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
		"all zeros": FormatPublic([32]byte{}),
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseStaticPublic(s); !errors.Is(err, ErrKeyMalformed) {
				t.Fatalf("ParseStaticPublic(%q) err = %v, want ErrKeyMalformed", s, err)
			}
		})
	}
}

func TestOperatorKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "operator.key")
	k1, created, err := LoadOrCreateOperatorKey(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Fatalf("not a PKCS#8 PEM file:\n%s", data)
	}
	k2, created, err := LoadOrCreateOperatorKey(path)
	if err != nil || created || !k1.Equal(k2) {
		t.Fatalf("second call: created=%v err=%v same=%v", created, err, k1.Equal(k2))
	}

	// A PKCS#8 key of another type is rejected and kept.
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPEM, _ := encodePKCS8(ec)
	other := filepath.Join(t.TempDir(), "ec.key")
	if err := os.WriteFile(other, ecPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateOperatorKey(other); !errors.Is(err, ErrKeyMalformed) {
		t.Fatalf("ECDSA key: err = %v, want ErrKeyMalformed", err)
	}
}

package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEnsureDevTLSHandshake(t *testing.T) {
	dir := t.TempDir()
	d, err := EnsureDevTLS(dir, []string{"chatd.test", "10.1.2.3"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{d.KeyFile, filepath.Join(dir, DevCAKeyFile)} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v err %v, want 0600", f, fi.Mode().Perm(), err)
		}
	}
	cert, err := tls.LoadX509KeyPair(d.CertFile, d.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c) // the handshake runs on the first read
			}()
		}
	}()

	roots := caPool(t, d.CAFile)
	for _, serverName := range []string{"", "localhost", "chatd.test"} {
		t.Run("name="+serverName, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: serverName})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo: %q %v", buf, err)
			}
		})
	}
	// A name not in the SANs fails verification.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "other.test"}); err == nil {
		c.Close()
		t.Fatal("handshake for a name outside the SANs succeeded")
	}
	// Without the CA the certificate is not trusted.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: x509.NewCertPool()}); err == nil {
		c.Close()
		t.Fatal("handshake without the dev CA succeeded")
	}

	leaf := readCert(t, d.CertFile)
	if len(leaf.IPAddresses) != 3 || len(leaf.DNSNames) != 2 {
		t.Errorf("SANs: DNS %v IP %v, want localhost+chatd.test and 127.0.0.1, ::1, 10.1.2.3", leaf.DNSNames, leaf.IPAddresses)
	}
	ca := readCert(t, d.CAFile)
	if !ca.IsCA || ca.NotAfter.Sub(ca.NotBefore) < 9*365*24*time.Hour {
		t.Errorf("CA: IsCA=%v validity %v", ca.IsCA, ca.NotAfter.Sub(ca.NotBefore))
	}
}

func TestEnsureDevTLSReuseAndReissue(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	d, err := EnsureDevTLS(dir, []string{"a.test"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ca0, cert0 := readFile(t, d.CAFile), readFile(t, d.CertFile)

	// Same hosts (a subset even, in another spelling), a month later: reused.
	if _, err := EnsureDevTLS(dir, []string{"A.test."}, now.AddDate(0, 1, 0)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, d.CertFile), cert0) || !bytes.Equal(readFile(t, d.CAFile), ca0) {
		t.Fatal("files changed although they were still good")
	}

	// A new host: new server certificate from the same CA.
	if _, err := EnsureDevTLS(dir, []string{"a.test", "[fd00::1]"}, now); err != nil {
		t.Fatal(err)
	}
	cert1 := readFile(t, d.CertFile)
	if bytes.Equal(cert1, cert0) {
		t.Fatal("server certificate not re-issued for a new host")
	}
	if !bytes.Equal(readFile(t, d.CAFile), ca0) {
		t.Fatal("CA changed when only the server certificate had to")
	}
	leaf := readCert(t, d.CertFile)
	if err := leaf.VerifyHostname("fd00::1"); err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("a.test"); err != nil {
		t.Fatal(err)
	}
	verifyChain(t, d, now)

	// 29 days before expiry: re-issued, same CA.
	later := leaf.NotAfter.Add(-29 * 24 * time.Hour)
	if _, err := EnsureDevTLS(dir, []string{"a.test", "fd00::1"}, later); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFile(t, d.CertFile), cert1) {
		t.Fatal("server certificate not re-issued near its expiry")
	}
	if !bytes.Equal(readFile(t, d.CAFile), ca0) {
		t.Fatal("CA changed on renewal")
	}
	verifyChain(t, d, later)

	// A server key that does not match the certificate: re-issued.
	other := filepath.Join(t.TempDir(), "x")
	d2, err := EnsureDevTLS(other, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.KeyFile, readFile(t, d2.KeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureDevTLS(dir, []string{"a.test"}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(d.CertFile, d.KeyFile); err != nil {
		t.Fatalf("pair not repaired: %v", err)
	}

	// Near the CA's own expiry: a new CA.
	ca := readCert(t, d.CAFile)
	if _, err := EnsureDevTLS(dir, nil, ca.NotAfter.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFile(t, d.CAFile), ca0) {
		t.Fatal("CA not replaced near its expiry")
	}
}

func TestEnsureDevTLSErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, DevCAFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, DevCAKeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureDevTLS(dir, nil, time.Now()); !errors.Is(err, ErrKeyMalformed) {
		t.Fatalf("malformed CA: err = %v, want ErrKeyMalformed", err)
	}
	if got := readFile(t, filepath.Join(dir, DevCAFile)); string(got) != "junk" {
		t.Fatal("malformed CA was overwritten")
	}
	if _, err := EnsureDevTLS(t.TempDir(), []string{"bad host/name"}, time.Now()); err == nil {
		t.Fatal("invalid host accepted")
	}
}

func verifyChain(t *testing.T, d DevTLS, at time.Time) {
	t.Helper()
	leaf := readCert(t, d.CertFile)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: caPool(t, d.CAFile), CurrentTime: at, DNSName: "localhost"}); err != nil {
		t.Fatalf("chain at %v: %v", at, err)
	}
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(readFile(t, file)) {
		t.Fatalf("%s holds no certificate", file)
	}
	return pool
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(file, file[:len(file)-len(".pem")]+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func readFile(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

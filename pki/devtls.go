package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the directory given to [EnsureDevTLS].
const (
	DevCAFile      = "ca.pem"
	DevCAKeyFile   = "ca-key.pem"
	DevCertFile    = "server.pem"
	DevCertKeyFile = "server-key.pem"
)

// Lifetimes and renewal margin of the development certificates.
const (
	DevCAValidity     = 10 * 365 * 24 * time.Hour
	DevCertValidity   = 365 * 24 * time.Hour
	DevRenewBefore    = 30 * 24 * time.Hour
	devBackdate       = time.Hour // tolerate clocks slightly behind the issuer's
	devCACommonName   = "chatd development CA"
	devCertCommonName = "chatd development server"
)

// DevTLS names the files of a development TLS setup. Clients trust CAFile;
// the server uses CertFile and KeyFile (e.g. with tls.LoadX509KeyPair).
type DevTLS struct {
	CAFile   string // dir/ca.pem, the CA certificate
	CertFile string // dir/server.pem, the server certificate
	KeyFile  string // dir/server-key.pem, the server's private key (0600)
}

// DefaultDevHosts are always in the server certificate's SANs.
func DefaultDevHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// EnsureDevTLS makes sure dir holds a development CA and a server
// certificate signed by it that covers localhost, 127.0.0.1, ::1 and hosts
// (IP addresses become IP SANs, names DNS SANs; "[::1]" style brackets are
// accepted), and returns the file names.
//
//   - dir/ca.pem and dir/ca-key.pem: an ECDSA P-256 CA valid for 10 years,
//     created when either file is missing or the CA expires within 30 days
//     (a new CA must then be trusted again). A CA file that exists but
//     cannot be parsed is an error wrapping [ErrKeyMalformed]; it is not
//     replaced.
//   - dir/server.pem and dir/server-key.pem: an ECDSA P-256 server
//     certificate valid for 1 year (never past the CA), reused when it is
//     signed by the CA, matches its key, covers every host and is valid for
//     more than 30 days after now; otherwise a new one is issued with the
//     same CA.
//
// Key files get mode 0600, certificates 0644, the directory 0700 when
// created. now is the issuing time (pass time.Now()). EnsureDevTLS is not
// safe to run concurrently on the same dir from several processes.
func EnsureDevTLS(dir string, hosts []string, now time.Time) (DevTLS, error) {
	out := DevTLS{
		CAFile:   filepath.Join(dir, DevCAFile),
		CertFile: filepath.Join(dir, DevCertFile),
		KeyFile:  filepath.Join(dir, DevCertKeyFile),
	}
	names, ips, err := devSANs(hosts)
	if err != nil {
		return DevTLS{}, fmt.Errorf("pki: dev TLS: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return DevTLS{}, fmt.Errorf("pki: dev TLS: %w", err)
	}
	caKeyFile := filepath.Join(dir, DevCAKeyFile)

	ca, caKey, err := loadDevCA(out.CAFile, caKeyFile)
	if err != nil {
		return DevTLS{}, fmt.Errorf("pki: dev TLS: %w", err)
	}
	if ca == nil || now.Add(DevRenewBefore).After(ca.NotAfter) {
		ca, caKey, err = createDevCA(out.CAFile, caKeyFile, now)
		if err != nil {
			return DevTLS{}, fmt.Errorf("pki: dev TLS: %w", err)
		}
	} else if devCertUsable(out.CertFile, out.KeyFile, ca, names, ips, now) {
		return out, nil
	}
	if err := issueDevCert(out.CertFile, out.KeyFile, ca, caKey, names, ips, now); err != nil {
		return DevTLS{}, fmt.Errorf("pki: dev TLS: %w", err)
	}
	return out, nil
}

func devSANs(hosts []string) (names []string, ips []net.IP, err error) {
	seen := map[string]bool{}
	for _, h := range append(DefaultDevHosts(), hosts...) {
		h = strings.TrimSpace(h)
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !seen[ip.String()] {
				seen[ip.String()] = true
				ips = append(ips, ip)
			}
			continue
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
		if !seen[h] {
			seen[h] = true
			names = append(names, h)
		}
	}
	return names, ips, nil
}

func validDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for i, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		if label == "*" && i == 0 {
			continue
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// loadDevCA returns (nil, nil, nil) when either file is missing.
func loadDevCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	cert, key, err := parseCertAndKey(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA in %s and %s (remove both to create a new CA): %w", certFile, keyFile, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s: %w: certificate is not a CA", certFile, ErrKeyMalformed)
	}
	return cert, key, nil
}

func parseCertAndKey(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrKeyMalformed)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrKeyMalformed, err)
	}
	k, err := parsePKCS8(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%w: key is a %T, expected ECDSA", ErrKeyMalformed, k)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, nil, fmt.Errorf("%w: certificate and private key do not match", ErrKeyMalformed)
	}
	return cert, key, nil
}

func createDevCA(certFile, keyFile string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: devCACommonName, Organization: []string{"chatd"}},
		NotBefore:             now.Add(-devBackdate),
		NotAfter:              now.Add(DevCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := createAndWrite(tmpl, tmpl, key, key, certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA: %w", err)
	}
	return cert, key, nil
}

func devCertUsable(certFile, keyFile string, ca *x509.Certificate, names []string, ips []net.IP, now time.Time) bool {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return false
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return false
	}
	cert, _, err := parseCertAndKey(certPEM, keyPEM)
	if err != nil {
		return false
	}
	if cert.CheckSignatureFrom(ca) != nil {
		return false
	}
	if now.Before(cert.NotBefore) || !now.Add(DevRenewBefore).Before(cert.NotAfter) {
		return false
	}
	for _, n := range names {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	for _, ip := range ips {
		if cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

func issueDevCert(certFile, keyFile string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string, ips []net.IP, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(DevCertValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: devCertCommonName, Organization: []string{"chatd"}},
		NotBefore:    now.Add(-devBackdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	if _, err := createAndWrite(tmpl, ca, caKey, key, certFile, keyFile); err != nil {
		return fmt.Errorf("issue server certificate: %w", err)
	}
	return nil
}

// createAndWrite signs tmpl (for key) with parentKey and writes key (0600)
// and then the certificate (0644). A crash between the two writes leaves a pair that does
// not match, which the next EnsureDevTLS detects and repairs.
func createAndWrite(tmpl, parent *x509.Certificate, parentKey crypto.Signer, key *ecdsa.PrivateKey, certFile, keyFile string) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodePKCS8(key)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(keyFile, keyPEM, 0o600, false); err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(certFile, certPEM, 0o644, false); err != nil {
		return nil, err
	}
	return cert, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // never zero
}

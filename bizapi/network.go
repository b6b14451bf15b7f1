package bizapi

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/netcheck"
)

// loadRoots reads the PEM file of chatd's CA; "" means the system roots (nil).
func loadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("bizapi: server CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("bizapi: server CA %s holds no PEM certificate", file)
	}
	return roots, nil
}

// netcheckConfig is netcheck's configuration for bizapi's settings: the same server, CA, proxy and
// 443-only mode as the gateway.
func netcheckConfig(cfg Config, roots *x509.CertPool) netcheck.Config {
	return netcheck.Config{ServerURL: cfg.ServerURL, RootCAs: roots, Proxy: cfg.Proxy, ProxySource: cfg.ProxySource, Only443: cfg.Only443}
}

// pinKey sets the keys pinned at registration, when st holds a registered account: the server static
// key, and the operator key that verifies the IP address list when one is pinned (an account
// registered with a server that published none has none until the gateway pins one on first use).
// Without a registered account both stay unset, and netcheck says that the keys it uses are not
// pinned.
func pinKey(ctx context.Context, nc *netcheck.Config, st store.Store) {
	a, err := st.Account(ctx)
	if err != nil || !a.Registered {
		return
	}
	nc.ServerKey = a.ServerKey
	if k, err := st.OperatorKey(ctx); err == nil && len(k) == ed25519.PublicKeySize {
		nc.OperatorKey = ed25519.PublicKey(k)
	}
}

// NetcheckConfig is netcheck's configuration for a bizapi with cfg — its server, CA, proxy and
// 443-only mode — and, when its database (cfg.DataDir) holds a registered account, the server static
// key and the operator key pinned at registration. It opens the database only to read those, so it
// works next to a running bizapi (and without one: `bizapi netcheck` before the first start).
func NetcheckConfig(ctx context.Context, cfg Config) (netcheck.Config, error) {
	roots, err := loadRoots(cfg.ServerCAFile)
	if err != nil {
		return netcheck.Config{}, err
	}
	nc := netcheckConfig(cfg, roots)
	db := filepath.Join(cfg.DataDir, DBFile)
	if _, err := os.Stat(db); err == nil {
		st, err := store.Open(db)
		if err != nil {
			return nc, fmt.Errorf("bizapi: reading the pinned keys: %w", err)
		}
		defer st.Close()
		pinKey(ctx, &nc, st)
	}
	return nc, nil
}

package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"

	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// The operator key is the chatd operator's Ed25519 public key, published as operator_key in
// /v1/config. It verifies the signed IP address list (iplist, regclient.IPList), so the key used for
// that must be one the business trusted when it registered, never one fetched along with the list:
// whoever can change the list in transit can change a key fetched with it too.
//
// It is pinned in the store at verify (Verify: PinOperatorKey), from the config of the registration
// answer. A new registration, of this number or another one, with this server or another, is a new
// trust decision and replaces the pinned key; a server that publishes none at registration leaves
// none pinned. After that the key is only compared, never followed (checkOperatorKey): a server that
// later publishes another key keeps the pinned one in use and gets a config error in health.
//
// An account registered before bizapi pinned operator keys (or with a server that published none
// then) has no pinned key: the first successful config fetch that names the pinned server static key
// pins the published one, trust on first use, logged at INFO.

// parseOperatorKey parses the operator_key of a published config (pki.ParseOperatorPublic). ""
// (the server has none) is nil and no error.
func parseOperatorKey(s string) (ed25519.PublicKey, error) {
	if s == "" {
		return nil, nil
	}
	return pki.ParseOperatorPublic(s)
}

// formatKey is a key for logs: standard base64, as the server publishes it.
func formatKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// checkOperatorKey compares the operator key that cc publishes with the pinned one and returns the
// config error it causes ("" for none). It never replaces a pinned key. When none is pinned it pins
// the published one (trust on first use), but only when sameServer says that cc names the server
// static key pinned at registration: a config from a server this account does not trust is no basis
// for trust.
func (g *Gateway) checkOperatorKey(ctx context.Context, cc regtypes.ClientConfig, sameServer bool) string {
	published, err := parseOperatorKey(cc.OperatorKey)
	if err != nil {
		g.log.Error("gateway: the server publishes a malformed operator key; the IP address list cannot be verified with it", "err", err)
		return fmt.Sprintf("the server publishes a malformed operator key (%v); it is not used", err)
	}
	pinned, err := g.cfg.Store.OperatorKey(ctx)
	if err != nil {
		g.log.Warn("gateway: reading the pinned operator key", "err", err)
		return ""
	}
	switch {
	case published == nil:
		if pinned != nil {
			g.log.Warn("gateway: the server publishes no operator key; keeping the one pinned at registration",
				"pinned", formatKey(pinned))
		}
		return ""
	case pinned == nil:
		if !sameServer {
			return "" // the static key mismatch is the config error
		}
		var created bool
		pinned, created, err = g.cfg.Store.PinOperatorKeyIfNone(ctx, published)
		if err != nil {
			g.log.Warn("gateway: pinning the operator key", "err", err)
			return ""
		}
		if created {
			g.log.Info("gateway: no operator key was pinned at registration (an older bizapi, or the server had none); "+
				"pinned the one the server publishes now (trust on first use)", "operator_key", formatKey(published))
			return ""
		}
		// Pinned meanwhile, by a registration: compare with that one.
	}
	if bytes.Equal(pinned, published) {
		return ""
	}
	g.log.Error("gateway: the server publishes a different operator key than the one pinned at registration; keeping the pinned key",
		"pinned", formatKey(pinned), "published", formatKey(published))
	return "the server publishes a different operator key than the one pinned at registration; the pinned key is " +
		"used to verify the IP address list (re-register if the operator key really changed)"
}

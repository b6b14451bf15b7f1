package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/chatd-dev/chatd/bizapi/store"
	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// Register asks chatd for a verification code for the number (POST /v1/account). When this bizapi
// already has that number registered, nothing is sent and AlreadyRegistered is set.
func (g *Gateway) Register(ctx context.Context, r RegisterRequest) (RegisterResult, error) {
	num, err := normalize(r.CC, r.PhoneNumber)
	if err != nil {
		return RegisterResult{}, &RegistrationError{Code: regtypes.CodeInvalidPhone, Message: err.Error()}
	}
	acct, err := g.cfg.Store.Account(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return RegisterResult{}, err
	}
	if err == nil && acct.Registered && acct.Phone == num {
		return RegisterResult{AlreadyRegistered: true, VName: acct.DisplayName}, nil
	}
	res, err := g.reg.RequestCode(ctx, regtypes.CodeRequest{Phone: num, Method: r.Method, BusinessCert: r.Cert})
	if err != nil {
		return RegisterResult{}, registrationError(err)
	}
	// A code request starts a new registration: a number registered before stops being used here
	// (as the On-Premises client restarts on a new number) until the new one is verified.
	wasRegistered := acct.Registered
	acct = store.Account{Phone: res.Phone, Method: res.Method, Cert: r.Cert, VName: res.VName}
	g.acctMu.Lock()
	err = g.cfg.Store.PutAccount(ctx, acct)
	g.acctMu.Unlock()
	if err != nil {
		return RegisterResult{}, err
	}
	if wasRegistered {
		poke(g.restart)
	}
	g.log.Info("registration code requested", "phone", res.Phone, "method", res.Method, "business", res.VName != "")
	return RegisterResult{VName: res.VName}, nil
}

// Verify finishes a registration with the code (POST /v1/account/verify): it creates the device key,
// has chatd bind it to the number, pins the server static key and the operator key (replacing those
// of an earlier registration), stores the account and (re)starts the connection.
func (g *Gateway) Verify(ctx context.Context, code string) error {
	acct, err := g.cfg.Store.Account(ctx)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (acct.Phone == "" || acct.Registered)) {
		return ErrNoPendingRegistration
	}
	if err != nil {
		return err
	}
	dev, err := pki.GenerateStaticKey()
	if err != nil {
		return err
	}
	res, err := g.reg.Verify(ctx, regtypes.VerifyRequest{
		Phone: acct.Phone, Code: code, DevicePublicKey: base64.StdEncoding.EncodeToString(dev.Public[:]),
	})
	if err != nil {
		return registrationError(err)
	}
	serverKey, err := pki.ParseStaticPublic(res.ServerStaticKey)
	if err != nil {
		return fmt.Errorf("gateway: the server sent a malformed key: %w", err)
	}
	// Pin the operator key of this registration's config (operatorkey.go). A new registration is a
	// new trust decision, possibly with another server: it replaces the key an earlier registration
	// pinned, and a server without one (or with a malformed one) leaves none pinned. It is written
	// before the account: until then no account is registered (Register replaced it with a pending
	// one), so a crash in between cannot leave this registration checked against an earlier key.
	opKey, err := parseOperatorKey(res.Config.OperatorKey)
	if err != nil {
		g.log.Warn("gateway: the server sent a malformed operator key at registration; none is pinned", "err", err)
		opKey = nil
	}
	g.acctMu.Lock()
	defer g.acctMu.Unlock()
	if err := g.cfg.Store.PinOperatorKey(ctx, opKey); err != nil {
		return err
	}
	doc, _ := json.Marshal(res.Config)
	now := g.cfg.Now()
	acct = store.Account{
		Phone:       res.Account.Phone,
		Method:      acct.Method,
		Cert:        acct.Cert,
		VName:       acct.VName,
		Registered:  true,
		Business:    res.Account.Business,
		DisplayName: res.Account.DisplayName,
		DevicePriv:  dev.Private,
		ServerKey:   serverKey,
		Config:      doc,
		ConfigAt:    now,
		VerifiedAt:  now,
	}
	if err := g.cfg.Store.PutAccount(ctx, acct); err != nil {
		return err
	}
	g.log.Info("registered", "phone", acct.Phone, "business", acct.Business, "server_key", pki.FormatPublic(serverKey),
		"operator_key", formatKey(opKey))
	poke(g.restart)
	return nil
}

// registrationError turns a regclient error into a *RegistrationError where chatd said why.
func registrationError(err error) error {
	var ae *regclient.APIError
	if errors.As(err, &ae) && ae.Code != "" {
		return &RegistrationError{Code: ae.Code, Message: ae.Message, RetryAfter: ae.RetryAfter}
	}
	return fmt.Errorf("gateway: chatd registration API: %w", err)
}

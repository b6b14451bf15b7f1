package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
	"github.com/chatd-dev/chatd/transport"
)

var registerHelp = help{
	usage: "chat register --server URL [--ca FILE] --phone NUMBER [--method sms|voice]\n" +
		"       chat register --code CODE\n" +
		"       chat register --server URL [--ca FILE] --phone NUMBER --code CODE|-|@FILE",
	about: `Registers a phone number with a chatd server, in two steps.

Without --code it asks the server (over HTTPS) to send a 6-digit verification code to the number by
SMS or voice, and remembers the request in the profile. With --code it proves the code: it generates
this device's key, has the server bind it to the number, pins the server's key (printed with its
fingerprint; compare it with the one the server operator publishes), and saves the profile. The
server, CA file and number of the request are remembered, so the second step needs only --code; give
them again to verify a code requested elsewhere.

Both steps at once: --code - requests the code and then reads it from standard input; --code @FILE
requests it and then reads it from FILE (with a dev chatd, DATA/codes/<number without +>).

Registering replaces the number's previous device, and a profile holds one registration: registering
another number (or server) moves the old inbox aside.`,
	examples: `  chat register --server https://chat.example.com --phone +15551234567
  chat register --code 123456
  # a local dev server (chatd serve --dev): trust its CA; the code is in chatd-data/codes/15551234567
  chat register --server https://localhost:8443 --ca chatd-data/tls/ca.pem --phone +15551234567 --method voice
  chat --profile ~/.chat-bob register --code 654321
  # both steps at once
  chat register --server https://chat.example.com --phone +15551234567 --code -
  chat register --server https://localhost:8443 --ca chatd-data/tls/ca.pem --phone +15550000001 \
      --code @chatd-data/codes/15550000001`,
}

func (a *app) cmdRegister(ctx context.Context, args []string) error {
	fset, profile := a.flags("register", registerHelp)
	server := fset.String("server", "", "HTTPS `URL` of the chatd server, e.g. https://chat.example.com (remembered from the code request)")
	ca := fset.String("ca", "", "PEM `FILE` of the CA that signs the server's certificate (default: the system's CAs; a dev chatd writes DATA/tls/ca.pem)")
	phoneNum := fset.String("phone", "", "the phone `NUMBER` to register, in international format: +15551234567")
	method := fset.String("method", regtypes.MethodSMS, "how the code is sent: `sms|voice`")
	code := fset.String("code", "", "the 6-digit verification `CODE`; without it, a code is requested; \"-\" requests one and reads it from standard input, \"@FILE\" requests one and reads it from FILE")
	timeout := timeoutFlag(fset, 30*time.Second, "each request to the server")
	pos, err := a.parse(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (give the number with --phone)", pos[0])
	}
	if *method != regtypes.MethodSMS && *method != regtypes.MethodVoice {
		return usagef("--method must be sms or voice, not %q", *method)
	}
	dir := *profile
	unlock, err := lockProfile(dir)
	if err != nil {
		return err
	}
	defer unlock()
	prof, err := loadProfile(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	r := registration{a: a, dir: dir, prof: prof, timeout: *timeout, method: *method, code: *code}
	// Fill in what was not given from the pending request, then from the registration.
	r.server, r.ca, r.phone = *server, *ca, *phoneNum
	if r.ca != "" {
		if r.ca, err = filepath.Abs(r.ca); err != nil {
			return err
		}
	}
	if r.server != "" && !strings.Contains(r.server, "://") {
		r.server = "https://" + r.server
	}
	r.server = strings.TrimRight(r.server, "/")
	for _, src := range []struct{ server, ca, phone string }{pendingFields(prof.Pending), {prof.Server, prof.CAFile, prof.Phone}} {
		if src.server == "" {
			continue
		}
		if r.server == "" {
			r.server = src.server
		}
		if r.server == src.server && r.ca == "" && *ca == "" {
			r.ca = src.ca
		}
		if r.phone == "" {
			r.phone = src.phone
		}
	}
	switch {
	case *code == "":
		return r.requestCode(ctx)
	case *code == "-" || strings.HasPrefix(*code, "@"):
		// Both at once: request a code, then read it from stdin or from a file.
		if err := r.requestCode(ctx); err != nil {
			return err
		}
		if r.code, err = r.readCode(*code); err != nil {
			return err
		}
	}
	return r.verify(ctx)
}

// readCode reads the code the server just sent: from standard input ("-") or from a file ("@FILE",
// such as the DATA/codes/<phone> file of a dev chatd).
func (r *registration) readCode(src string) (string, error) {
	if src == "-" {
		r.a.con.Noticef("Enter the code: ")
		line, err := bufio.NewReader(r.a.stdin).ReadString('\n')
		if strings.TrimSpace(line) == "" && err != nil {
			return "", fmt.Errorf("no code on standard input (%v); finish later with: chat%s register --code CODE", err, r.a.profileArg(r.dir))
		}
		return strings.TrimSpace(line), nil
	}
	b, err := os.ReadFile(src[1:])
	if err != nil {
		return "", fmt.Errorf("reading the code: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func pendingFields(p *Pending) (f struct{ server, ca, phone string }) {
	if p != nil {
		f.server, f.ca, f.phone = p.Server, p.CAFile, p.Phone
	}
	return f
}

type registration struct {
	a       *app
	dir     string
	prof    *Profile
	timeout time.Duration

	server, ca, phone, method, code string
}

func (r *registration) client() (*regclient.Client, error) {
	if r.server == "" {
		return nil, usagef("--server is required: the HTTPS URL of the chatd server, e.g. https://chat.example.com")
	}
	if r.phone == "" {
		return nil, usagef("--phone is required: the number to register, e.g. +15551234567")
	}
	rc, err := r.a.newRegClient(r.server, r.ca)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	return rc, nil
}

func (r *registration) requestCode(ctx context.Context) error {
	rc, err := r.client()
	if err != nil {
		return err
	}
	defer rc.HTTPClient.CloseIdleConnections()
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	// Check that this client can use the server before a code goes out.
	cc, err := rc.Config(ctx)
	if err != nil {
		return r.explain(err)
	}
	if _, _, err := regclient.ParseConfig(cc); err != nil {
		return fmt.Errorf("cannot use the server %s: %w", r.server, err)
	}
	resp, err := rc.RequestCode(ctx, regtypes.CodeRequest{Phone: r.phone, Method: r.method})
	if err != nil {
		return r.explain(err)
	}
	now := time.Now()
	r.prof.Pending = &Pending{Phone: resp.Phone, Server: r.server, CAFile: r.ca, Method: resp.Method,
		RequestedAt: now.UTC(), ExpiresAt: now.Add(time.Duration(resp.ExpiresIn) * time.Second).UTC()}
	if err := r.prof.save(r.dir); err != nil {
		return err
	}
	how := "SMS"
	if resp.Method == regtypes.MethodVoice {
		how = "a voice call"
	}
	r.a.con.Printf("A verification code is on its way to %s by %s; it is valid for %s.", plus(resp.Phone), how,
		humanDuration(time.Duration(resp.ExpiresIn)*time.Second))
	r.a.con.Printf("Finish with: chat%s register --code CODE", r.a.profileArg(r.dir))
	return nil
}

func (r *registration) verify(ctx context.Context) error {
	if r.server == "" || r.phone == "" {
		return usagef("no code was requested from this profile (%s); request one first: "+
			"chat register --server URL --phone NUMBER, or give --server and --phone with --code", r.dir)
	}
	rc, err := r.client()
	if err != nil {
		return err
	}
	defer rc.HTTPClient.CloseIdleConnections()
	ctx, cancel := withTimeout(ctx, r.timeout)
	defer cancel()
	var (
		resp   regtypes.VerifyResponse
		device noisesock.Keypair
	)
	for try := 0; ; try++ {
		if device, err = noisesock.GenerateKeypair(); err != nil {
			return err
		}
		resp, err = rc.Verify(ctx, regtypes.VerifyRequest{Phone: r.phone, Code: r.code, DevicePublicKey: pki.FormatPublic(device.Public)})
		// device_in_use: another account has this (random) key; a new one fixes it and the code stays valid.
		if regclient.Code(err) != regtypes.CodeDeviceInUse || try > 0 {
			break
		}
	}
	if err != nil {
		return r.explain(err)
	}
	key, eps, err := regclient.ParseConfig(resp.Config)
	if err != nil {
		return fmt.Errorf("registered, but cannot use the server's configuration: %w", err)
	}
	if k, err := pki.ParseStaticPublic(resp.ServerStaticKey); err != nil || k != key {
		return fmt.Errorf("the server answered two different static keys (%q and %q); not saving this registration", resp.ServerStaticKey, resp.Config.ServerStaticKey)
	}
	p := r.prof
	if p.Registered() && p.Server == r.server && p.ServerKey != pki.FormatPublic(key) {
		r.a.con.Noticef("warning: the server's key changed from %s to %s since the last registration", p.ServerKey, pki.FormatPublic(key))
	}
	now := time.Now()
	if p.Phone != "" && (p.Phone != resp.Account.Phone || p.Server != r.server) {
		archived, err := archiveInbox(r.dir, p.Phone, now)
		if err != nil {
			return err
		}
		if archived != "" {
			r.a.con.Noticef("the inbox of %s on %s was moved to %s", plus(p.Phone), p.Server, archived)
		}
	}
	*p = Profile{
		Phone:           resp.Account.Phone,
		Business:        resp.Account.Business,
		DisplayName:     resp.Account.DisplayName,
		Server:          r.server,
		CAFile:          r.ca,
		ServerKey:       pki.FormatPublic(key),
		ChatEndpoints:   transport.EndpointStrings(eps),
		DeviceKey:       secretKey(device.Private),
		RegisteredAt:    now.UTC(),
		ConfigFetchedAt: now.UTC(),
	}
	if err := p.save(r.dir); err != nil {
		return err
	}
	con := r.a.con
	con.Printf("Registered %s on %s.", plus(p.Phone), p.Server)
	con.Printf("Server key: %s (fingerprint %s), pinned.", p.ServerKey, fingerprint(key))
	con.Printf("Chat endpoints: %s", strings.Join(p.ChatEndpoints, ", "))
	con.Printf("Profile: %s", r.dir)
	return nil
}

var attemptsLeft = regexp.MustCompile(`\((\d+) attempts? left`)

// explain turns registration errors into what to do next, for every regapi error code.
func (r *registration) explain(err error) error {
	var te *regclient.TLSError
	if errors.As(err, &te) {
		if r.ca != "" {
			return fmt.Errorf("%w (the CA file used was %s)", err, r.ca)
		}
		return err
	}
	var ae *regclient.APIError
	if !errors.As(err, &ae) {
		return err
	}
	num := plus(r.phone)
	if r.prof.Pending != nil && r.prof.Pending.Phone != "" {
		num = plus(r.prof.Pending.Phone)
	}
	again := fmt.Sprintf("chat%s register --phone %s", r.a.profileArg(r.dir), num)
	switch ae.Code {
	case regtypes.CodeInvalidPhone:
		return fmt.Errorf("invalid phone number %q: %s", r.phone, ae.Message)
	case regtypes.CodeInvalidMethod:
		return fmt.Errorf("the server does not send codes by %q: use --method sms or --method voice", r.method)
	case regtypes.CodeRateLimited:
		wait := "a while"
		if ae.RetryAfter > 0 {
			wait = ae.RetryAfter.String()
		}
		return fmt.Errorf("too many attempts; the server asks to wait %s before trying again (%s)", wait, ae.Message)
	case regtypes.CodeSendFailed:
		return fmt.Errorf("the server could not send the code by %s; check the number, try again in a minute, or try --method voice", r.method)
	case regtypes.CodeInvalidCode:
		return fmt.Errorf("%q is not a verification code: give the 6 digits that were sent to %s", r.code, num)
	case regtypes.CodeWrongCode:
		if m := attemptsLeft.FindStringSubmatch(ae.Message); m != nil {
			n, _ := strconv.Atoi(m[1])
			return fmt.Errorf("wrong code for %s: check it and try again (%d attempt%s left before the code is cancelled)", num, n, plural(n))
		}
		return fmt.Errorf("wrong code for %s: check it and try again", num)
	case regtypes.CodeCodeExpired:
		return fmt.Errorf("the code has expired; request a new one: %s", again)
	case regtypes.CodeTooManyAttempts:
		return fmt.Errorf("too many wrong codes, so the code was cancelled; request a new one: %s", again)
	case regtypes.CodeNoPendingCode:
		return fmt.Errorf("the server has no code waiting for %s (it was used, cancelled, or requested from another server); request one: %s", num, again)
	case regtypes.CodeDeviceInUse:
		return fmt.Errorf("the server says this device key belongs to another account even after a new key was made; try again (%s)", ae.Message)
	case regtypes.CodeBusinessDisabled, regtypes.CodeInvalidCert, regtypes.CodeCertExpired, regtypes.CodeCertNotYetValid, regtypes.CodeCertPhoneMismatch:
		return fmt.Errorf("business registration failed: %s", ae.Message)
	case regtypes.CodeInternal:
		return fmt.Errorf("the server failed (%s); try again later, and tell its operator if it persists", ae.Message)
	case regtypes.CodeNotFound, regtypes.CodeMethodNotAllowed, regtypes.CodeUnsupportedMediaType, regtypes.CodeInvalidRequest, regtypes.CodeRequestTooLarge:
		return fmt.Errorf("the server at %s did not accept this client's request (%s: %s); is it a compatible chatd?", r.server, ae.Code, ae.Message)
	}
	return fmt.Errorf("%s: %w", r.server, err)
}

// profileArg is " --profile DIR" when dir is not the default profile, for commands we print.
func (a *app) profileArg(dir string) string {
	saved := a.profile
	a.profile = ""
	def := a.defaultProfile()
	a.profile = saved
	if dir == def {
		return ""
	}
	return " --profile " + dir
}

// humanDuration is "10 minutes", "90 seconds", "2 hours".
func humanDuration(d time.Duration) string {
	switch {
	case d >= 2*time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= 2*time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	case d%time.Second == 0:
		n := int(d / time.Second)
		return fmt.Sprintf("%d second%s", n, plural(n))
	}
	return d.String()
}

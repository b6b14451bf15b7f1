// Command chat is the chatd end-user terminal client: it registers a phone number, sends and receives
// messages and receipts, and shows the connection. Run "chat help" for the commands.
//
// Its state lives in a profile folder (--profile, $CHAT_PROFILE, else $HOME/.chat):
//
//	profile.json  the registration: phone, server URL, CA file, pinned server key, chat endpoints and
//	              the device's private key (mode 0600; the key is never printed)
//	inbox.jsonl   every received message and receipt, one JSON object a line, with server ids
//	seen          the server ids of the most recent received messages, against duplicates across runs
//	lock          held while a command uses the profile (one command at a time per profile)
//	inbox-<phone>-<time>.jsonl  the inbox of an earlier registration of this profile
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/transport"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `chat — the chatd terminal client

Usage:
  chat register --server URL [--ca FILE] --phone NUMBER   request a verification code
  chat register --code CODE                               verify it and save the profile
  chat send <to> <text...>                                send a message (--wait delivered|read)
  chat listen [--read] [--echo]                           print arriving messages and receipts
  chat read <server-id>... | --all                        send read receipts
  chat lookup <phone>...                                  is a number registered? a business?
  chat inbox [--unread]                                   show the received messages
  chat status                                             the profile and the connection
  chat [interactive]                                      send and receive in one session
  chat version                                            print the version
  chat help [command]                                     show help for a command

Every command takes --profile DIR (default $CHAT_PROFILE, else $HOME/.chat): the folder with the
registration, the device key and the inbox. Phone numbers are in international format: +15551234567.

Network flags, before the command or after it, for every command that reaches the server:
  --proxy URL|none   HTTP CONNECT proxy for chat and HTTPS alike, http://[user:password@]host:port;
                     "none" (or "direct") ignores HTTPS_PROXY. Default: HTTPS_PROXY, except NO_PROXY hosts
  --only-443         never dial port 5222: chat goes over TLS or WebSocket on the server's 443 port

Example, against a chatd started with "chatd serve --dev":
  chat register --server https://localhost:8443 --ca chatd-data/tls/ca.pem --phone +15551234567
  chat register --code 123456                  # the code is in chatd's log and chatd-data/codes/
  chat send +15557654321 hello there --wait delivered
  chat listen --read
  chat --proxy http://proxy.corp:3128 --only-443 status

Run "chat help <command>" (or "chat <command> -h") for its flags and examples.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default behaviour returns: a second Ctrl-C ends chat at once even
	// when saying goodbye to the server hangs.
	go func() { <-ctx.Done(); stop() }()
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	code := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// app is one run of the chat command, with its I/O and environment injected for tests.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	// Set by run and the command's flags.
	con     *console
	profile string // --profile given before the command, "" if none
	proxy   string // --proxy, before or after the command: "" (the environment), "none", or a URL
	only443 bool   // --only-443, before or after the command
}

type command struct {
	name string
	run  func(a *app, ctx context.Context, args []string) error
}

var commands = []command{
	{"register", (*app).cmdRegister},
	{"send", (*app).cmdSend},
	{"listen", (*app).cmdListen},
	{"read", (*app).cmdRead},
	{"lookup", (*app).cmdLookup},
	{"inbox", (*app).cmdInbox},
	{"status", (*app).cmdStatus},
	{"interactive", (*app).cmdInteractive},
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// run runs the command line args and returns the exit status: 0 success, 1 failure, 2 usage error,
// 130 interrupted.
func (a *app) run(ctx context.Context, args []string) int {
	a.con = newConsole(a.stdout, a.stderr)
	// Global flags before the command: --profile and the network flags.
	top := flag.NewFlagSet("chat", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	top.StringVar(&a.profile, "profile", "", "")
	top.StringVar(&a.proxy, "proxy", "", "")
	top.BoolVar(&a.only443, "only-443", false, "")
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, usage)
			return 0
		}
		fmt.Fprintf(a.stderr, "chat: %v (see chat help)\n", err)
		return 2
	}
	args = top.Args()
	name := "interactive"
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "help":
		if len(args) == 0 {
			fmt.Fprint(a.stdout, usage)
			return 0
		}
		if findCommand(args[0]) == nil {
			fmt.Fprintf(a.stderr, "chat help: unknown command %q (see chat help)\n", args[0])
			return 2
		}
		return a.run(ctx, []string{args[0], "-h"})
	case "version", "--version":
		fmt.Fprintln(a.stdout, "chat", version)
		return 0
	}
	cmd := findCommand(name)
	if cmd == nil {
		fmt.Fprintf(a.stderr, "chat: unknown command %q (see chat help)\n", name)
		return 2
	}
	err := cmd.run(a, ctx, args)
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "chat %s: %s (see chat %s -h)\n", name, oneLine(ue.msg), name)
		return 2
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(a.stderr, "chat: interrupted")
		return 130
	}
	fmt.Fprintln(a.stderr, "chat: "+userText(err))
	return 1
}

// errHelp is returned by a command whose help was asked for and printed.
var errHelp = errors.New("help printed")

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// userText is err as one line, without the package prefixes of the libraries.
func userText(err error) string {
	s := oneLine(err.Error())
	for _, p := range []string{"regclient: ", "client: "} {
		s = strings.TrimPrefix(s, p)
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// help describes one command for its -h.
type help struct {
	usage    string // after "Usage: "
	about    string // what it does, a paragraph
	examples string // lines
	// offline: the command never reaches the server, so it has no network flags.
	offline bool
}

// flags returns a FlagSet for the command name with the flags every command has (--profile) and,
// unless it is offline, the network flags (--proxy, --only-443), which override the ones given
// before the command.
func (a *app) flags(name string, h help) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := a.stdout
		fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", h.usage, strings.TrimSpace(h.about))
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		if h.examples != "" {
			fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(h.examples, "\n"))
		}
	}
	profile := fs.String("profile", a.defaultProfile(),
		"profile folder `DIR`: registration, device key, inbox (from $CHAT_PROFILE, else $HOME/.chat)")
	if !h.offline {
		// Func, not StringVar: the help must not print a --proxy given before the command as the
		// default (it may hold a password).
		fs.Func("proxy", "HTTP CONNECT proxy for chat and HTTPS alike: `URL|none`, where URL is "+
			`http://[user:password@]host:port and "none" (or "direct") ignores HTTPS_PROXY `+
			`(default: HTTPS_PROXY, except NO_PROXY hosts)`,
			func(v string) error { a.proxy = v; return nil })
		fs.BoolFunc("only-443", "never dial port 5222: chat goes over TLS or WebSocket on the server's 443 port only",
			func(v string) error {
				b, err := strconv.ParseBool(v)
				a.only443 = b
				return err
			})
	}
	return fs, profile
}

// parse parses args, allowing flags between the positional arguments ("--" ends the flags). It
// prints the help and returns errHelp for -h.
func (a *app) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) { // the FlagSet printed the help
				return nil, errHelp
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), a.checkProxy()
		}
		if len(rest) == 0 {
			return pos, a.checkProxy()
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// checkProxy reports a --proxy that is not a proxy setting (without showing its password).
func (a *app) checkProxy() error {
	if _, err := cliutil.ProxySetting(a.proxy); err != nil {
		return usagef("--proxy: %v", err)
	}
	return nil
}

// proxyFunc is the proxy choice of --proxy for the chat client and the HTTPS client (nil: direct).
// The commands checked it when they parsed their flags.
func (a *app) proxyFunc() transport.ProxyFunc {
	p, _ := cliutil.ProxySetting(a.proxy)
	return p
}

func (a *app) defaultProfile() string {
	if a.profile != "" {
		return a.profile
	}
	if p := a.getenv("CHAT_PROFILE"); p != "" {
		return p
	}
	if home := a.getenv("HOME"); home != "" {
		return filepath.Join(home, ".chat")
	}
	return ".chat"
}

// verboseFlag adds -v, which sends the client library's logs to stderr.
func verboseFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("v", false, "verbose: log the connection's events (dials, reconnects) to stderr")
}

func timeoutFlag(fs *flag.FlagSet, def time.Duration, what string) *time.Duration {
	return fs.Duration("timeout", def, "give up after this long: "+what+" (0: never)")
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// Command chatd is the chatd messaging server.
//
//	chatd serve [--config FILE] [flags]   run the server
//	chatd cert issue --phone N --name NAME  issue a business certificate
//	chatd iplist [--config FILE]          write the signed IP address list as a ZIP
//	chatd keys                            print the server and operator public keys
//
// Run "chatd help" for everything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `chatd — the chatd messaging server

Usage:
  chatd serve [--config FILE] [flags]     run the server (chat on 5222 and 443, HTTPS on 443)
  chatd cert issue --phone N --name NAME  issue a business certificate signed by the operator key
  chatd iplist [--config FILE] [--out F]  write the IP address list as a ZIP signed by the operator key
  chatd keys [--data DIR]                 print the server static key (clients pin it) and the operator key
  chatd version                           print the version
  chatd help [command]                    show help

Quick start for a local network:
  chatd serve --dev          # data in ./chatd-data, chat on :5222, HTTPS on :8443, metrics on 127.0.0.1:9480

Run "chatd serve -h" for every setting and its default.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cliutil.Program{
		Name: "chatd", Version: version, Usage: usage,
		Commands: map[string]cliutil.Command{
			"serve":  cmdServe,
			"cert":   cmdCert,
			"keys":   cmdKeys,
			"iplist": cmdIPList,
		},
	}.Run(args, stdout, stderr)
}

func cmdServe(args []string, stdout, stderr io.Writer) error {
	var f fileConfig
	fs := newServeFlags(&f)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: chatd serve [--config FILE] [flags]

Runs the server: raw chatd on the chat port (5222), and on the 443 port a multiplexer that routes TLS by
ALPN (chatd/1 → chat, http/1.1 or h2 → the HTTPS registration/config API) and raw chatd preambles to
chat. Metrics are on the admin address at /metrics.

Every setting can be given in the config file (same name, e.g. chat_listen = ":5222") or as a flag.

Flags:
`)
		fs.PrintDefaults()
		fmt.Fprint(stderr, `
Examples:
  chatd serve --dev
  chatd serve --config /etc/chatd/chatd.toml
  chatd serve --data /var/lib/chatd --tls-cert cert.pem --tls-key key.pem --public-host chat.example.com \
              --sms-webhook-url https://sms-gateway.internal/send
`)
	}
	if err := cliutil.ParseWithConfig(fs, args, &f); err != nil {
		return err
	}
	cfg := f.nodeConfig()
	logger, err := cliutil.NewLogger(stderr, f.LogLevel, f.LogFormat)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	if cfg.Dev {
		fmt.Fprintf(stdout, "chatd (dev mode) is serving\n  chat:    %s\n  https:   %s  (CA for clients: %s)\n  data:    %s\n  server key: %s\n",
			n.ChatAddr, n.HTTPSURL, n.CAFile, cfg.DataDir, pki.FormatPublic(n.ServerKey))
		if n.IPList != nil {
			fmt.Fprintf(stdout, "  IP list:    %s/v1/iplist.zip (%s)\n", n.HTTPSURL, n.IPList.Version())
		}
	}
	return cliutil.WaitAndShutdown(ctx, n, logger, "a listener failed; shutting down")
}

func cmdCert(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "issue" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stderr, "Usage: chatd cert issue --phone N --name NAME [--valid DURATION] [--data DIR]")
			return flag.ErrHelp
		}
		return errors.New(`cert: the only subcommand is "issue" (chatd cert issue --phone N --name NAME)`)
	}
	fs := flag.NewFlagSet("cert issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "chatd-data", "data folder holding operator.key (created if missing)")
	ph := fs.String("phone", "", "the business phone number, e.g. +15551234567 (required)")
	name := fs.String("name", "", "the verified display name shown to customers (required)")
	valid := fs.Duration("valid", 365*24*time.Hour, "how long the certificate is valid")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: chatd cert issue --phone N --name NAME [--valid DURATION] [--data DIR]

Issues a business certificate: the operator's signed statement that the number belongs to a business with
this verified display name. The business passes it when it registers (bizapi: POST /v1/account "cert").
The certificate is printed on stdout as one line.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *ph == "" || *name == "" {
		return errors.New("cert issue: --phone and --name are required")
	}
	key, created, err := pki.LoadOrCreateOperatorKey(filepath.Join(*data, node.OperatorKeyFile))
	if err != nil {
		return fmt.Errorf("cert issue: %w", err)
	}
	if created {
		fmt.Fprintf(stderr, "created a new operator key in %s\n", filepath.Join(*data, node.OperatorKeyFile))
	}
	now := time.Now()
	cert, err := pki.IssueBusinessCert(key, pki.BusinessCert{Phone: *ph, DisplayName: strings.TrimSpace(*name), IssuedAt: now, ExpiresAt: now.Add(*valid)})
	if err != nil {
		return fmt.Errorf("cert issue: %w", err)
	}
	fmt.Fprintln(stdout, cert)
	return nil
}

func cmdKeys(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "chatd-data", "data folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	k, created, err := pki.LoadOrCreateStaticKey(filepath.Join(*data, node.StaticKeyFile))
	if err != nil {
		return err
	}
	op, _, err := pki.LoadOrCreateOperatorKey(filepath.Join(*data, node.OperatorKeyFile))
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stderr, "created new keys in %s\n", *data)
	}
	fmt.Fprintf(stdout, "server_static_key = %s\noperator_key      = %s\n", pki.FormatPublic(k.Public), formatEd25519(op.Public()))
	return nil
}

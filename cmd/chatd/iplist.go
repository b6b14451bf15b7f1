package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/chatd-dev/chatd/internal/cliutil"
	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/pki"
	"github.com/chatd-dev/chatd/server/node"
)

// ipListFlags are the settings of "chatd serve" that "chatd iplist" uses.
var ipListFlags = []string{"data", "iplist-file", "dev", "public-host"}

// cmdIPList writes the signed IP address list as a ZIP without starting a server: the same list,
// signed by the same operator key, as "chatd serve" with the same settings serves at
// /v1/iplist.zip (byte for byte).
func cmdIPList(args []string, stdout, stderr io.Writer) error {
	var c fileConfig
	serve := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.register(serve)
	fset := flag.NewFlagSet("iplist", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.String("config", "", "chatd's TOML config file: its data_dir, iplist_file, dev, public_host and dev_hosts are used (flags override it)")
	for _, name := range ipListFlags {
		f := serve.Lookup(name)
		fset.Var(f.Value, f.Name, f.Usage)
	}
	out := fset.String("out", "", `the ZIP to write (default "chatd-iplist-<updated>.zip" in the current folder; "-" writes to stdout)`)
	fset.Usage = func() {
		fmt.Fprint(stderr, `Usage: chatd iplist [--config FILE] [--data DIR] [--iplist-file FILE] [--out FILE]

Writes the deployment's IP address list as a ZIP signed by the operator key (DATA/operator.key), for
network admins who allow-list chatd's addresses, without starting a server. The ZIP holds ipv4.txt and
ipv6.txt (one CIDR range per line), META.txt (updated, effective_from, expires) and SIGNATURE; it is the
same file a running chatd serves at /v1/iplist.zip. The list comes from iplist_file (see
docs/operations.md, "The IP address list"); in dev mode without one, from the server's own addresses.

Flags:
`)
		fset.PrintDefaults()
		fmt.Fprint(stderr, `
Examples:
  chatd iplist --config /etc/chatd/chatd.toml
  chatd iplist --data /var/lib/chatd --iplist-file /etc/chatd/iplist.toml --out /srv/www/chatd-iplist.zip
`)
	}
	if err := cliutil.ParseWithConfig(fset, args, &c); err != nil {
		return err
	}
	cfg := c.nodeConfig()
	now := time.Now()
	l, err := node.IPList(cfg, now)
	if err != nil {
		return fmt.Errorf("iplist: %w", err)
	}
	if l == nil {
		return errors.New("iplist: no IP address list is configured: set iplist_file in the config file, or give --iplist-file FILE")
	}
	if l.Expired(now) {
		return fmt.Errorf("iplist: the list in %s expired on %s: clients would refuse it; set new dates (updated, and expires if set) and run again",
			cfg.IPListFile, l.Expires.Format(iplist.DateLayout))
	}
	keyFile := filepath.Join(cfg.DataDir, node.OperatorKeyFile)
	if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
		// A new key would sign a list that no client can verify.
		return fmt.Errorf("iplist: no operator key in %s: give the server's data folder (--data DIR, or data_dir in --config)", keyFile)
	}
	key, _, err := pki.LoadOrCreateOperatorKey(keyFile)
	if err != nil {
		return fmt.Errorf("iplist: %w", err)
	}
	s, err := iplist.Sign(*l, key)
	if err != nil {
		return fmt.Errorf("iplist: %w", err)
	}
	var zip bytes.Buffer
	if err := iplist.WriteZIP(&zip, s); err != nil {
		return err
	}
	summary := stdout
	switch *out {
	case "-":
		if _, err := stdout.Write(zip.Bytes()); err != nil {
			return fmt.Errorf("iplist: %w", err)
		}
		summary = stderr
	case "":
		*out = l.FileName()
		fallthrough
	default:
		if err := os.WriteFile(*out, zip.Bytes(), 0o644); err != nil {
			return fmt.Errorf("iplist: %w", err)
		}
		fmt.Fprintf(summary, "wrote %s\n", *out)
	}
	fmt.Fprintf(summary, "  version:        %s\n  ranges:         %d IPv4, %d IPv6\n  effective from: %s%s\n  expires:        %s\n  operator key:   %s\n",
		l.Version(), len(l.IPv4), len(l.IPv6), l.EffectiveFrom.Format(iplist.DateLayout), notYet(*l, now),
		l.Expires.Format(iplist.DateLayout), formatEd25519(key.Public()))
	return nil
}

func notYet(l iplist.List, now time.Time) string {
	if l.Effective(now) {
		return ""
	}
	return " (not yet effective)"
}

// Package iplist is the format of a chatd deployment's IP address list (DESIGN N9): the IPv4 and
// IPv6 ranges its servers use, with the date the list was updated, the date it takes effect and the
// date it expires, signed by the operator key (the Ed25519 key that also signs business
// certificates). Clients verify it against the operator key they pinned at registration and turn it
// into firewall rules.
//
// # Forms
//
// The operator writes a list file (TOML, [ParseFile]); chatd signs it and publishes it in two forms
// that carry the same signature over the same bytes and verify the same way:
//
//   - a ZIP ([WriteZIP], [ParseZIP]) of four files: META.txt, ipv4.txt, ipv6.txt and SIGNATURE;
//   - a JSON object ([Signed.MarshalJSON], [ParseJSON]).
//
// The JSON object is one line (broken here for reading):
//
//	{"format":"chatd-iplist/1","updated":"2026-11-20","effective_from":"2026-12-01","expires":"2027-03-01",
//	 "ipv4":["31.13.64.0/18","157.240.0.0/16"],"ipv6":["2a03:2880::/32"],
//	 "operator_key":"<std base64, 32 bytes>","signature":"<std base64, 64 bytes>"}
//
// # The signed bytes
//
// The signature is Ed25519 over the canonical text, which is the ZIP's META.txt, ipv4.txt and
// ipv6.txt concatenated in that order. META.txt is exactly six lines:
//
//	format: chatd-iplist/1
//	updated: 2026-11-20
//	effective_from: 2026-12-01
//	expires: 2027-03-01
//	ipv4_ranges: 2
//	ipv6_ranges: 1
//
// ipv4.txt and ipv6.txt hold one range per line in CIDR notation as Go's netip.Prefix writes it
// (IPv6 compressed, lower case), sorted by address and then prefix length, without duplicates. Every
// line, the last included, ends with "\n"; there are no blank lines, comments, spaces or CRs. A
// family without ranges is an empty file. The JSON form carries the same values; a verifier renders
// the same text from them (dates and CIDR strings as given, counts from the array lengths) and checks
// the signature over it. The first line separates these signatures from the operator's business
// certificates, whose signed bytes are JSON.
//
// SIGNATURE is two lines, "operator_key: <base64>\n" and "signature: <base64>\n" (standard base64);
// the JSON has the same two fields. operator_key names the signing key so that a list signed by
// another key is told apart from an altered one ([ErrWrongKey], [ErrSignature]); it is not trusted:
// the signature is checked with the key the caller pinned.
//
// To verify a ZIP without chatd, with the operator key in a PEM file (docs/operations.md shows how to
// make one from the base64 key):
//
//	cat META.txt ipv4.txt ipv6.txt > signed.txt
//	sed -n 's/^signature: //p' SIGNATURE | base64 -d > sig.bin
//	openssl pkeyutl -verify -pubin -inkey operator.pub.pem -rawin -in signed.txt -sigfile sig.bin
//
// # Verification
//
// [ParseZIP] and [ParseJSON] check, in this order: the size limits ([ErrTooLarge]); the container,
// the four files or fields ([ErrMissingFile], [ErrMalformed]); the key named by the list
// ([ErrWrongKey]); the signature over the signed bytes as received ([ErrSignature]); then the content:
// that it is in canonical form, the CIDRs, the dates ([ErrMalformed]); and last the expiry
// ([ErrExpired]). So content is only interpreted once it is known to be the operator's, and a
// malformed list is one the operator signed.
//
// # Dates and expiry
//
// Dates are calendar dates in UTC, written YYYY-MM-DD; a List holds them as midnight UTC. A list is
// effective from 00:00 UTC on effective_from ([List.Effective]); before that it is valid but the
// ranges are not in use yet (a list is published ahead of an address change). It expires at 00:00
// UTC on expires: from then on verification fails with [ErrExpired]. expires is signed, so a stale
// list cannot be replayed forever (by a mirror, a cache or an attacker in the path); it bounds how
// long a list that was replaced (because addresses were given up) is still accepted. The operator
// sets it in the list file; by default it is [DefaultValidity] (90 days) after the later of updated
// and effective_from, so a list must be looked at and re-dated at least that often.
//
// # Version
//
// [List.Version] is the updated date and the first 8 hex digits of the SHA-256 of the signed bytes,
// e.g. "2026-11-20.a79a0850": it sorts by date and changes with every change of the list (ranges or
// dates), also twice in one day. chatd publishes it as iplist_version in /v1/config, so a client
// knows when to download the list again.
package iplist

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Format is the first line's value in META.txt and the "format" of the JSON form.
const Format = "chatd-iplist/1"

// DateLayout is the layout of every date in the list (time.DateOnly).
const DateLayout = time.DateOnly

// Limits and defaults.
const (
	// DefaultValidity is how long after the later of Updated and EffectiveFrom a list expires when
	// its Expires is not set.
	DefaultValidity = 90 * 24 * time.Hour
	// MaxRanges is the most ranges per family.
	MaxRanges = 10_000
	// MaxSize is the largest ZIP or JSON that ParseZIP and ParseJSON accept, in bytes.
	MaxSize = 2 << 20
	// MaxFileSize is the largest ipv4.txt or ipv6.txt, uncompressed, in bytes. (MaxRanges IPv6
	// ranges of the longest form fit.)
	MaxFileSize = 1 << 20
	// maxSmallFile is the largest META.txt or SIGNATURE, uncompressed.
	maxSmallFile = 4 << 10
)

// years bounds the dates of a list, so that they have four digits and no arithmetic overflows.
const minYear, maxYear = 1970, 9999

// List is a deployment's IP address list.
type List struct {
	// Updated is the date the list was last changed.
	Updated time.Time
	// EffectiveFrom is the date the ranges are in use from. If zero, Normalize uses Updated.
	EffectiveFrom time.Time
	// Expires is the first date on which the list is no longer valid. If zero, Normalize uses
	// DefaultValidity after the later of Updated and EffectiveFrom.
	Expires time.Time
	// IPv4 and IPv6 are the ranges: each an address of its family with the host bits clear.
	IPv4, IPv6 []netip.Prefix
}

// Normalize checks l and returns it in canonical form: dates as midnight UTC (the date of each time
// in its own location), zero EffectiveFrom and Expires filled in with their defaults, the ranges
// sorted by address and prefix length, duplicates removed. It fails, with an error wrapping
// [ErrMalformed], when Updated is zero, a date is outside the years 1970–9999, Expires is not after
// both Updated and EffectiveFrom, there is no range at all, a range is invalid, of the other family
// (an IPv4-mapped IPv6 address counts as IPv4), or has host bits set (the error gives the masked
// range: a typo in a firewall list should be fixed, not guessed), and with [ErrTooLarge] when a family
// has more than MaxRanges ranges. The slices of l are not modified.
func Normalize(l List) (List, error) {
	if l.Updated.IsZero() {
		return List{}, fmt.Errorf("%w: the updated date is not set", ErrMalformed)
	}
	l.Updated = dateOf(l.Updated)
	if l.EffectiveFrom.IsZero() {
		l.EffectiveFrom = l.Updated
	}
	l.EffectiveFrom = dateOf(l.EffectiveFrom)
	if l.Expires.IsZero() {
		l.Expires = dateOf(later(l.Updated, l.EffectiveFrom).Add(DefaultValidity))
	}
	l.Expires = dateOf(l.Expires)
	if err := checkDates(l); err != nil {
		return List{}, err
	}
	var err error
	if l.IPv4, err = normalizeFamily("ipv4", l.IPv4, true); err != nil {
		return List{}, err
	}
	if l.IPv6, err = normalizeFamily("ipv6", l.IPv6, false); err != nil {
		return List{}, err
	}
	if len(l.IPv4)+len(l.IPv6) == 0 {
		return List{}, fmt.Errorf("%w: the list has no address ranges", ErrMalformed)
	}
	return l, nil
}

// Effective reports whether the list's ranges are in use at now: from 00:00 UTC on EffectiveFrom.
func (l List) Effective(now time.Time) bool { return !now.Before(l.EffectiveFrom) }

// Expired reports whether the list is no longer valid at now: from 00:00 UTC on Expires.
func (l List) Expired(now time.Time) bool { return !now.Before(l.Expires) }

// Version identifies the list: the Updated date, a dot and the first 8 hex digits of the SHA-256 of
// the signed bytes (see the package documentation), e.g. "2026-11-20.a79a0850". It is meaningful for
// a normalized list (from Normalize, Sign, ParseZIP, ParseJSON or ParseFile).
func (l List) Version() string {
	sum := sha256.Sum256(l.signedBytes())
	return l.Updated.UTC().Format(DateLayout) + "." + hex.EncodeToString(sum[:4])
}

// Ranges returns the IPv4 and then the IPv6 ranges in one new slice.
func (l List) Ranges() []netip.Prefix { return slices.Concat(l.IPv4, l.IPv6) }

func (l List) String() string {
	return fmt.Sprintf("IP list %s: %d IPv4 and %d IPv6 ranges, effective from %s, expires %s",
		l.Version(), len(l.IPv4), len(l.IPv6), l.EffectiveFrom.Format(DateLayout), l.Expires.Format(DateLayout))
}

func dateOf(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkDates checks the dates of a list whose dates are already midnight UTC.
func checkDates(l List) error {
	for _, d := range []struct {
		name string
		t    time.Time
	}{{"updated", l.Updated}, {"effective_from", l.EffectiveFrom}, {"expires", l.Expires}} {
		if y := d.t.Year(); y < minYear || y > maxYear {
			return fmt.Errorf("%w: %s date %s is outside the years %d–%d", ErrMalformed, d.name, d.t.Format(DateLayout), minYear, maxYear)
		}
	}
	if !l.Expires.After(l.Updated) || !l.Expires.After(l.EffectiveFrom) {
		return fmt.Errorf("%w: expires (%s) must be after updated (%s) and effective_from (%s)", ErrMalformed,
			l.Expires.Format(DateLayout), l.Updated.Format(DateLayout), l.EffectiveFrom.Format(DateLayout))
	}
	return nil
}

// checkPrefix checks one range of the family (v4 or not) and returns why it is not acceptable, or "".
func checkPrefix(p netip.Prefix, v4 bool) string {
	switch {
	case !p.IsValid():
		return "is not a valid CIDR range"
	case p != p.Masked():
		return fmt.Sprintf("has host bits set; the range is %s (or use a longer prefix)", p.Masked())
	case v4 && !p.Addr().Is4():
		return "is not an IPv4 range; list it under ipv6"
	case !v4 && p.Addr().Is4In6(): // masked, so Bits() >= 96
		return fmt.Sprintf("is an IPv4-mapped IPv6 range; list it under ipv4 as %s", netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96))
	case !v4 && !p.Addr().Is6():
		return "is not an IPv6 range; list it under ipv4"
	}
	return ""
}

func normalizeFamily(name string, in []netip.Prefix, v4 bool) ([]netip.Prefix, error) {
	out := slices.Clone(in)
	for _, p := range out {
		if why := checkPrefix(p, v4); why != "" {
			return nil, fmt.Errorf("%w: %s range %s %s", ErrMalformed, name, p, why)
		}
	}
	slices.SortFunc(out, comparePrefix)
	out = slices.Compact(out)
	if len(out) > MaxRanges {
		return nil, fmt.Errorf("%w: %d %s ranges; at most %d", ErrTooLarge, len(out), name, MaxRanges)
	}
	if out == nil {
		out = []netip.Prefix{}
	}
	return out, nil
}

// comparePrefix orders ranges by address, then by prefix length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

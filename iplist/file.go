package iplist

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// MaxListFileSize is the largest list file LoadFile reads, in bytes.
const MaxListFileSize = 4 << 20

// fileList is the operator's list file.
type fileList struct {
	Updated       fileDate `toml:"updated"`
	EffectiveFrom fileDate `toml:"effective_from"`
	Expires       fileDate `toml:"expires"`
	IPv4          []string `toml:"ipv4"`
	IPv6          []string `toml:"ipv6"`
}

// fileDate is a date in the list file: a TOML date (2026-11-20) or a string "2026-11-20".
type fileDate struct{ time.Time }

func (d *fileDate) UnmarshalText(b []byte) error {
	// A TOML date arrives as the RFC 3339 text of midnight UTC.
	s := strings.TrimSuffix(string(b), "T00:00:00Z")
	t, err := parseDate(s)
	if err != nil {
		return err
	}
	d.Time = t
	return nil
}

// ParseFile parses the operator's list file, TOML with these keys, and returns the normalized list
// (see Normalize for the checks):
//
//	updated = 2026-11-20           # required: the date the list last changed
//	effective_from = 2026-12-01    # optional (default: updated): the date the ranges are in use from
//	expires = 2027-03-01           # optional (default: 90 days after the later of the two)
//	ipv4 = ["157.240.0.0/16", "31.13.64.0/18", "203.0.113.7"]
//	ipv6 = ["2a03:2880::/32"]
//
// Dates are TOML dates or "YYYY-MM-DD" strings, in UTC. A range is a CIDR with the host bits clear;
// a bare address stands for itself alone (/32, /128). Unknown keys are an error, so that a typo does
// not drop a setting.
func ParseFile(data []byte) (List, error) {
	var f fileList
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return List{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return List{}, fmt.Errorf("%w: unknown key %q (the keys are updated, effective_from, expires, ipv4 and ipv6)", ErrMalformed, und[0].String())
	}
	if f.Updated.IsZero() {
		return List{}, fmt.Errorf("%w: updated is missing: set the date the list last changed, e.g. updated = %s", ErrMalformed, time.Now().UTC().Format(DateLayout))
	}
	l := List{Updated: f.Updated.Time, EffectiveFrom: f.EffectiveFrom.Time, Expires: f.Expires.Time}
	if l.IPv4, err = parseFileRanges("ipv4", f.IPv4); err != nil {
		return List{}, err
	}
	if l.IPv6, err = parseFileRanges("ipv6", f.IPv6); err != nil {
		return List{}, err
	}
	return Normalize(l)
}

func parseFileRanges(fam string, in []string) ([]netip.Prefix, error) {
	if len(in) > MaxRanges {
		return nil, fmt.Errorf("%w: %d %s ranges; at most %d", ErrTooLarge, len(in), fam, MaxRanges)
	}
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		s = strings.TrimSpace(s)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%w: %s entry %d: %q is not a CIDR range (like 203.0.113.0/24) or an address", ErrMalformed, fam, i+1, truncate(s))
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

// LoadFile reads and parses the list file at path (see ParseFile); errors name the file.
func LoadFile(path string) (List, error) {
	f, err := os.Open(path)
	if err != nil {
		return List{}, fmt.Errorf("iplist: list file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxListFileSize+1))
	if err != nil {
		return List{}, fmt.Errorf("iplist: list file %s: %w", path, err)
	}
	if len(data) > MaxListFileSize {
		return List{}, fmt.Errorf("iplist: list file %s: %w: more than %d bytes", path, ErrTooLarge, MaxListFileSize)
	}
	l, err := ParseFile(data)
	if err != nil {
		return List{}, fmt.Errorf("list file %s: %w", path, err)
	}
	return l, nil
}

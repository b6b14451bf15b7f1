package iplist

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The files of the ZIP form.
const (
	MetaFile      = "META.txt"
	IPv4File      = "ipv4.txt"
	IPv6File      = "ipv6.txt"
	SignatureFile = "SIGNATURE"
)

// The keys of META.txt, in their order.
const (
	keyFormat        = "format"
	keyUpdated       = "updated"
	keyEffectiveFrom = "effective_from"
	keyExpires       = "expires"
	keyIPv4Ranges    = "ipv4_ranges"
	keyIPv6Ranges    = "ipv6_ranges"
)

var metaKeys = []string{keyFormat, keyUpdated, keyEffectiveFrom, keyExpires, keyIPv4Ranges, keyIPv6Ranges}

// texts renders the three signed files of a normalized list.
func (l List) texts() (meta, v4, v6 []byte) {
	return renderMeta(Format, l.Updated.Format(DateLayout), l.EffectiveFrom.Format(DateLayout), l.Expires.Format(DateLayout), len(l.IPv4), len(l.IPv6)),
		renderLines(prefixStrings(l.IPv4)), renderLines(prefixStrings(l.IPv6))
}

// signedBytes is the canonical text of a normalized list: the bytes its signature covers.
func (l List) signedBytes() []byte {
	meta, v4, v6 := l.texts()
	return slices.Concat(meta, v4, v6)
}

func renderMeta(format, updated, effectiveFrom, expires string, n4, n6 int) []byte {
	var b bytes.Buffer
	for i, v := range []string{format, updated, effectiveFrom, expires, strconv.Itoa(n4), strconv.Itoa(n6)} {
		b.WriteString(metaKeys[i])
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func renderLines(lines []string) []byte {
	var b bytes.Buffer
	for _, s := range lines {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// naming says where a value came from, for error messages: the ZIP's files or the JSON's fields.
type naming struct {
	meta  string                         // "META.txt: " or ""
	file  func(fam string) string        // the ranges of family "ipv4" or "ipv6"
	entry func(fam string, i int) string // the i-th (from 1) range of the family
}

var (
	zipNames = naming{meta: MetaFile + ": ", file: func(fam string) string { return fam + ".txt" }, entry: func(fam string, i int) string {
		return fmt.Sprintf("%s.txt line %d", fam, i)
	}}
	jsonNames = naming{file: func(fam string) string { return fam }, entry: func(fam string, i int) string {
		return fmt.Sprintf("%s entry %d", fam, i)
	}}
)

// parseTexts parses the three signed files strictly: they must be exactly what texts renders for
// the list they describe, and the list must be valid (Normalize would not change it).
func parseTexts(meta, v4, v6 []byte, nm naming) (List, error) {
	vals, err := parseMeta(meta, nm)
	if err != nil {
		return List{}, err
	}
	if vals[0] != Format {
		return List{}, fmt.Errorf("%w: %sformat is %q; this verifier reads %q", ErrMalformed, nm.meta, vals[0], Format)
	}
	var l List
	for i, dst := range []*time.Time{&l.Updated, &l.EffectiveFrom, &l.Expires} {
		if *dst, err = parseDate(vals[1+i]); err != nil {
			return List{}, fmt.Errorf("%w: %s%s %w", ErrMalformed, nm.meta, metaKeys[1+i], err)
		}
	}
	var counts [2]int
	for i := range counts {
		s := vals[4+i]
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || strconv.Itoa(n) != s {
			return List{}, fmt.Errorf("%w: %s%s %q is not a count", ErrMalformed, nm.meta, metaKeys[4+i], s)
		}
		if n > MaxRanges {
			return List{}, fmt.Errorf("%w: %s%s is %d; at most %d", ErrTooLarge, nm.meta, metaKeys[4+i], n, MaxRanges)
		}
		counts[i] = n
	}
	if err := checkDates(l); err != nil {
		return List{}, err
	}
	if l.IPv4, err = parseRanges("ipv4", v4, counts[0], true, nm); err != nil {
		return List{}, err
	}
	if l.IPv6, err = parseRanges("ipv6", v6, counts[1], false, nm); err != nil {
		return List{}, err
	}
	if len(l.IPv4)+len(l.IPv6) == 0 {
		return List{}, fmt.Errorf("%w: the list has no address ranges", ErrMalformed)
	}
	return l, nil
}

// parseMeta returns the six values of META.txt, in the order of metaKeys.
func parseMeta(meta []byte, nm naming) ([]string, error) {
	s := string(meta)
	if !strings.HasSuffix(s, "\n") {
		return nil, fmt.Errorf("%w: %sthe last line does not end with a line break", ErrMalformed, nm.meta)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != len(metaKeys) {
		return nil, fmt.Errorf("%w: %s%d lines; want exactly %d (%s)", ErrMalformed, nm.meta, len(lines), len(metaKeys), strings.Join(metaKeys, ", "))
	}
	vals := make([]string, len(lines))
	for i, line := range lines {
		v, ok := strings.CutPrefix(line, metaKeys[i]+": ")
		if !ok {
			return nil, fmt.Errorf("%w: %sline %d is %q; want %q", ErrMalformed, nm.meta, i+1, truncate(line), metaKeys[i]+": …")
		}
		vals[i] = v
	}
	return vals, nil
}

// parseDate parses a YYYY-MM-DD date as midnight UTC.
func parseDate(s string) (time.Time, error) {
	t, err := time.Parse(DateLayout, s)
	if err != nil || t.Format(DateLayout) != s {
		return time.Time{}, fmt.Errorf("%q is not a date YYYY-MM-DD", truncate(s))
	}
	return t, nil
}

// parseRanges parses a family's file: n lines, each a canonical CIDR range of the family, in strictly
// increasing order.
func parseRanges(fam string, data []byte, n int, v4 bool, nm naming) ([]netip.Prefix, error) {
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%w: %s: the last line does not end with a line break", ErrMalformed, nm.file(fam))
	}
	if got := bytes.Count(data, []byte{'\n'}); got != n {
		return nil, fmt.Errorf("%w: %s has %d ranges, but %s%s_ranges is %d", ErrMalformed, nm.file(fam), got, nm.meta, fam, n)
	}
	out := make([]netip.Prefix, 0, n)
	rest := string(data)
	for i := 1; rest != ""; i++ {
		line, after, _ := strings.Cut(rest, "\n")
		rest = after
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %q is not a CIDR range", ErrMalformed, nm.entry(fam, i), truncate(line))
		}
		if why := checkPrefix(p, v4); why != "" {
			return nil, fmt.Errorf("%w: %s: %s %s", ErrMalformed, nm.entry(fam, i), line, why)
		}
		if p.String() != line {
			return nil, fmt.Errorf("%w: %s: %q is not written canonically; want %q", ErrMalformed, nm.entry(fam, i), line, p.String())
		}
		if len(out) > 0 && comparePrefix(out[len(out)-1], p) >= 0 {
			return nil, fmt.Errorf("%w: %s: %s is out of order or repeated (ranges are sorted by address, then prefix length)", ErrMalformed, nm.entry(fam, i), p)
		}
		out = append(out, p)
	}
	return out, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	const max = 60
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

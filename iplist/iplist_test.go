package iplist_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/iplist"
)

var (
	opKey    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	opPub    = opKey.Public().(ed25519.PublicKey)
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
)

func date(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// sample is the list of the package documentation, unsorted and with a duplicate.
func sample() iplist.List {
	return iplist.List{
		Updated:       date("2026-08-08"),
		EffectiveFrom: date("2026-08-17"),
		IPv4:          pfx("157.240.0.0/16", "31.13.64.0/18", "157.240.0.0/16"),
		IPv6:          pfx("2a03:2880::/32"),
	}
}

// now is a moment when sample is valid and effective.
var now = date("2026-09-01")

func sign(t *testing.T, l iplist.List, key ed25519.PrivateKey) iplist.Signed {
	t.Helper()
	s, err := iplist.Sign(l, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func zipOf(t *testing.T, s iplist.Signed) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := iplist.WriteZIP(&b, s); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jsonOf(t *testing.T, s iplist.Signed) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unzip returns the files of a ZIP, in order.
func unzip(t *testing.T, data []byte) (names []string, files map[string][]byte) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	files = map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, f.Name)
		files[f.Name] = b
	}
	return names, files
}

// rezip writes files in the order of names.
func rezip(t *testing.T, names []string, files map[string][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[n])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var fileOrder = []string{iplist.MetaFile, iplist.IPv4File, iplist.IPv6File, iplist.SignatureFile}

func TestRoundTrip(t *testing.T) {
	s := sign(t, sample(), opKey)
	want := iplist.List{
		Updated:       date("2026-08-08"),
		EffectiveFrom: date("2026-08-17"),
		Expires:       date("2026-11-15"), // 90 days after effective_from
		IPv4:          pfx("31.13.64.0/18", "157.240.0.0/16"),
		IPv6:          pfx("2a03:2880::/32"),
	}
	if !equal(s.List, want) {
		t.Fatalf("signed list %+v, want %+v", s.List, want)
	}
	z := zipOf(t, s)
	fromZIP, err := iplist.ParseZIP(z, opPub, now)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := iplist.ParseJSON(jsonOf(t, s), opPub, now)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(fromZIP, want) || !equal(fromJSON, want) {
		t.Fatalf("parsed:\nZIP  %+v\nJSON %+v\nwant %+v", fromZIP, fromJSON, want)
	}
	if v := fromZIP.Version(); v != s.List.Version() || v != fromJSON.Version() || !strings.HasPrefix(v, "2026-08-08.") || len(v) != len("2026-08-08.")+8 {
		t.Errorf("versions %q %q %q", s.List.Version(), fromZIP.Version(), fromJSON.Version())
	}
	if !bytes.Equal(z, zipOf(t, s)) {
		t.Error("the same signed list gave two different ZIPs")
	}
	if s.List.FileName() != "chatd-iplist-2026-08-08.zip" {
		t.Errorf("file name %q", s.List.FileName())
	}

	// The files are the documented text, and the JSON's signature is the one over META.txt ‖ ipv4.txt ‖ ipv6.txt.
	names, files := unzip(t, z)
	if !slices.Equal(names, fileOrder) {
		t.Errorf("ZIP files %v, want %v", names, fileOrder)
	}
	wantMeta := "format: chatd-iplist/1\nupdated: 2026-08-08\neffective_from: 2026-08-17\nexpires: 2026-11-15\nipv4_ranges: 2\nipv6_ranges: 1\n"
	if string(files[iplist.MetaFile]) != wantMeta || string(files[iplist.IPv4File]) != "31.13.64.0/18\n157.240.0.0/16\n" || string(files[iplist.IPv6File]) != "2a03:2880::/32\n" {
		t.Errorf("files:\n%s%s%s", files[iplist.MetaFile], files[iplist.IPv4File], files[iplist.IPv6File])
	}
	var j struct{ Signature []byte }
	json.Unmarshal(jsonOf(t, s), &j)
	signed := slices.Concat(files[iplist.MetaFile], files[iplist.IPv4File], files[iplist.IPv6File])
	if !ed25519.Verify(opPub, signed, j.Signature) || !strings.Contains(string(files[iplist.SignatureFile]), "signature: ") {
		t.Error("the JSON's signature does not verify over the ZIP's text files")
	}
	wantJSON := `{"format":"chatd-iplist/1","updated":"2026-08-08","effective_from":"2026-08-17","expires":"2026-11-15",` +
		`"ipv4":["31.13.64.0/18","157.240.0.0/16"],"ipv6":["2a03:2880::/32"],"operator_key":`
	if got := string(jsonOf(t, s)); !strings.HasPrefix(got, wantJSON) {
		t.Errorf("JSON %s\nwant prefix %s", got, wantJSON)
	}

	// A family may be empty: an empty file, an empty array.
	l := sample()
	l.IPv6 = nil
	s = sign(t, l, opKey)
	if got, err := iplist.ParseZIP(zipOf(t, s), opPub, now); err != nil || len(got.IPv6) != 0 || len(got.IPv4) != 2 {
		t.Errorf("IPv4 only, ZIP: %+v %v", got, err)
	}
	if !strings.Contains(string(jsonOf(t, s)), `"ipv6":[]`) {
		t.Errorf("IPv4 only JSON: %s", jsonOf(t, s))
	}
	if got, err := iplist.ParseJSON(jsonOf(t, s), opPub, now); err != nil || len(got.IPv4) != 2 {
		t.Errorf("IPv4 only, JSON: %+v %v", got, err)
	}
}

func equal(a, b iplist.List) bool {
	return a.Updated.Equal(b.Updated) && a.EffectiveFrom.Equal(b.EffectiveFrom) && a.Expires.Equal(b.Expires) &&
		slices.Equal(a.IPv4, b.IPv4) && slices.Equal(a.IPv6, b.IPv6)
}

// TestVersionChanges: any change of the list changes its version, even on the same day.
func TestVersionChanges(t *testing.T) {
	base := sign(t, sample(), opKey).List.Version()
	l := sample()
	l.IPv4 = append(l.IPv4, netip.MustParsePrefix("198.51.100.0/24"))
	if v := sign(t, l, opKey).List.Version(); v == base || v[:10] != base[:10] {
		t.Errorf("added range: version %s, before %s", v, base)
	}
	l = sample()
	l.Expires = date("2027-01-01")
	if v := sign(t, l, opKey).List.Version(); v == base {
		t.Errorf("new expiry: version unchanged %s", v)
	}
	// The key is not part of the version: the same list signed by a new key is the same list.
	if v := sign(t, sample(), otherKey).List.Version(); v != base {
		t.Errorf("other key: version %s, want %s", v, base)
	}
}

func TestNormalize(t *testing.T) {
	l, err := iplist.Normalize(iplist.List{
		Updated: time.Date(2026, 8, 8, 23, 30, 0, 0, time.FixedZone("UTC-5", -5*3600)), // the date is the 8th where it was written
		IPv6:    pfx("2001:db8::/32", "2001:db8::/48", "2001:db8::/32", "::1/128"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Updated.Equal(date("2026-08-08")) || !l.EffectiveFrom.Equal(date("2026-08-08")) || !l.Expires.Equal(date("2026-11-06")) {
		t.Errorf("dates %v %v %v", l.Updated, l.EffectiveFrom, l.Expires)
	}
	if want := pfx("::1/128", "2001:db8::/32", "2001:db8::/48"); !slices.Equal(l.IPv6, want) || l.IPv4 == nil {
		t.Errorf("ranges %v %v, want %v and []", l.IPv4, l.IPv6, want)
	}

	bad := []struct {
		name string
		edit func(*iplist.List)
		err  error
		msg  string
	}{
		{"no updated date", func(l *iplist.List) { l.Updated = time.Time{} }, iplist.ErrMalformed, "updated date is not set"},
		{"host bits", func(l *iplist.List) { l.IPv4 = pfx("157.240.1.0/16") }, iplist.ErrMalformed, "host bits set; the range is 157.240.0.0/16"},
		{"IPv6 in ipv4", func(l *iplist.List) { l.IPv4 = pfx("2001:db8::/32") }, iplist.ErrMalformed, "not an IPv4 range"},
		{"IPv4 in ipv6", func(l *iplist.List) { l.IPv6 = pfx("192.0.2.0/24") }, iplist.ErrMalformed, "not an IPv6 range"},
		{"IPv4-mapped", func(l *iplist.List) { l.IPv6 = pfx("::ffff:192.0.2.0/120") }, iplist.ErrMalformed, "list it under ipv4 as 192.0.2.0/24"},
		{"invalid", func(l *iplist.List) { l.IPv4 = []netip.Prefix{{}} }, iplist.ErrMalformed, "not a valid CIDR"},
		{"no ranges", func(l *iplist.List) { l.IPv4, l.IPv6 = nil, nil }, iplist.ErrMalformed, "no address ranges"},
		{"expires before effective", func(l *iplist.List) { l.Expires = date("2026-08-17") }, iplist.ErrMalformed, "expires (2026-08-17) must be after"},
		{"year", func(l *iplist.List) { l.Updated = date("1969-12-31") }, iplist.ErrMalformed, "outside the years"},
		{"too many", func(l *iplist.List) {
			l.IPv4 = nil
			for i := range iplist.MaxRanges + 1 {
				l.IPv4 = append(l.IPv4, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
			}
		}, iplist.ErrTooLarge, "at most 10000"},
	}
	for _, tt := range bad {
		l := sample()
		tt.edit(&l)
		_, err := iplist.Sign(l, opKey)
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v, want %v with %q", tt.name, err, tt.err, tt.msg)
		}
	}
	if _, err := iplist.Sign(sample(), opKey[:10]); err == nil {
		t.Error("signed with a broken key")
	}
}

// TestTampered: any change to the signed files or fields fails the signature.
func TestTampered(t *testing.T) {
	s := sign(t, sample(), opKey)
	_, files := unzip(t, zipOf(t, s))
	tamper := map[string]func(map[string][]byte){
		"range replaced in ipv4.txt": func(f map[string][]byte) {
			f[iplist.IPv4File] = []byte("31.13.64.0/18\n198.51.100.0/24\n")
		},
		"range dropped, count fixed": func(f map[string][]byte) {
			f[iplist.IPv4File] = []byte("31.13.64.0/18\n")
			f[iplist.MetaFile] = bytes.Replace(f[iplist.MetaFile], []byte("ipv4_ranges: 2"), []byte("ipv4_ranges: 1"), 1)
		},
		"expiry extended": func(f map[string][]byte) {
			f[iplist.MetaFile] = bytes.Replace(f[iplist.MetaFile], []byte("expires: 2026-11-15"), []byte("expires: 2036-11-15"), 1)
		},
		"signature flipped": func(f map[string][]byte) {
			f[iplist.SignatureFile] = []byte(strings.Replace(string(f[iplist.SignatureFile]), "signature: ", "signature: A", 1)[:len(f[iplist.SignatureFile])-1] + "\n")
		},
		"signature empty": func(f map[string][]byte) {
			f[iplist.SignatureFile] = []byte("operator_key: " + b64(opPub) + "\nsignature: \n")
		},
	}
	for name, edit := range tamper {
		f := maps(files)
		edit(f)
		_, err := iplist.ParseZIP(rezip(t, fileOrder, f), opPub, now)
		if !errors.Is(err, iplist.ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}

	// The same in JSON.
	var j map[string]any
	json.Unmarshal(jsonOf(t, s), &j)
	j["ipv4"] = []string{"31.13.64.0/18", "198.51.100.0/24"}
	b, _ := json.Marshal(j)
	if _, err := iplist.ParseJSON(b, opPub, now); !errors.Is(err, iplist.ErrSignature) {
		t.Errorf("JSON with a replaced range: %v, want ErrSignature", err)
	}
	json.Unmarshal(jsonOf(t, s), &j)
	delete(j, "signature")
	b, _ = json.Marshal(j)
	if _, err := iplist.ParseJSON(b, opPub, now); !errors.Is(err, iplist.ErrSignature) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("JSON without signature: %v, want ErrSignature", err)
	}
}

func maps(m map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

func b64(b []byte) string {
	s, _ := json.Marshal(b)
	return strings.Trim(string(s), `"`)
}

// TestOtherKey: a list signed by another operator is ErrWrongKey, and a list that names the pinned
// key but was signed by another is ErrSignature.
func TestOtherKey(t *testing.T) {
	s := sign(t, sample(), otherKey)
	if _, err := iplist.ParseZIP(zipOf(t, s), opPub, now); !errors.Is(err, iplist.ErrWrongKey) || !strings.Contains(err.Error(), b64(opPub)) {
		t.Errorf("ZIP by another key: %v, want ErrWrongKey naming the pinned key", err)
	}
	if _, err := iplist.ParseJSON(jsonOf(t, s), opPub, now); !errors.Is(err, iplist.ErrWrongKey) {
		t.Errorf("JSON by another key: %v, want ErrWrongKey", err)
	}
	s.OperatorKey = opPub // claims the pinned key
	if _, err := iplist.ParseZIP(zipOf(t, s), opPub, now); !errors.Is(err, iplist.ErrSignature) {
		t.Errorf("forged key name, ZIP: %v, want ErrSignature", err)
	}
	if _, err := iplist.ParseJSON(jsonOf(t, s), opPub, now); !errors.Is(err, iplist.ErrSignature) {
		t.Errorf("forged key name, JSON: %v, want ErrSignature", err)
	}
	if _, err := iplist.ParseZIP(zipOf(t, s), nil, now); err == nil || !strings.Contains(err.Error(), "0 bytes") {
		t.Errorf("no key: %v", err)
	}
}

func TestExpiryAndEffective(t *testing.T) {
	s := sign(t, sample(), opKey)
	z, j := zipOf(t, s), jsonOf(t, s)
	expires := date("2026-11-15")
	for _, tc := range []struct {
		now       time.Time
		expired   bool
		effective bool
	}{
		{date("2026-08-08"), false, false}, // published, not yet in use
		{date("2026-08-17").Add(-time.Nanosecond), false, false},
		{date("2026-08-17"), false, true},
		{expires.Add(-time.Nanosecond), false, true},
		{expires, true, true},
		{date("2030-01-01"), true, true},
	} {
		l, errZ := iplist.ParseZIP(z, opPub, tc.now)
		_, errJ := iplist.ParseJSON(j, opPub, tc.now)
		if tc.expired {
			if !errors.Is(errZ, iplist.ErrExpired) || !errors.Is(errJ, iplist.ErrExpired) || !strings.Contains(errZ.Error(), "expired on 2026-11-15") {
				t.Errorf("%v: %v / %v, want ErrExpired", tc.now, errZ, errJ)
			}
			continue
		}
		if errZ != nil || errJ != nil {
			t.Errorf("%v: %v / %v", tc.now, errZ, errJ)
			continue
		}
		if l.Effective(tc.now) != tc.effective || l.Expired(tc.now) {
			t.Errorf("%v: effective %v expired %v", tc.now, l.Effective(tc.now), l.Expired(tc.now))
		}
	}
}

// signedZIP makes a ZIP of the given text files, signed over them as they are: what a buggy or
// hostile signer could produce.
func signedZIP(t *testing.T, meta, v4, v6 string) []byte {
	t.Helper()
	sig := ed25519.Sign(opKey, []byte(meta+v4+v6))
	return rezip(t, fileOrder, map[string][]byte{
		iplist.MetaFile: []byte(meta), iplist.IPv4File: []byte(v4), iplist.IPv6File: []byte(v6),
		iplist.SignatureFile: []byte("operator_key: " + b64(opPub) + "\nsignature: " + b64(sig) + "\n"),
	})
}

func meta(n4, n6 string) string {
	return "format: chatd-iplist/1\nupdated: 2026-08-08\neffective_from: 2026-08-17\nexpires: 2026-11-15\nipv4_ranges: " + n4 + "\nipv6_ranges: " + n6 + "\n"
}

// TestMalformed: signed content that breaks the format is refused with ErrMalformed and says where.
func TestMalformed(t *testing.T) {
	if _, err := iplist.ParseZIP(signedZIP(t, meta("1", "1"), "192.0.2.0/24\n", "2001:db8::/32\n"), opPub, now); err != nil {
		t.Fatalf("the well-formed base case: %v", err)
	}
	cases := []struct{ name, meta, v4, v6, msg string }{
		{"not a CIDR", meta("2", "0"), "192.0.2.0/24\n192.0.2.300/24\n", "", `ipv4.txt line 2: "192.0.2.300/24" is not a CIDR range`},
		{"a bare address", meta("1", "0"), "192.0.2.1\n", "", "not a CIDR range"},
		{"host bits", meta("1", "0"), "192.0.2.1/24\n", "", "host bits set"},
		{"IPv6 in ipv4.txt", meta("1", "0"), "2001:db8::/32\n", "", "not an IPv4 range"},
		{"IPv4 in ipv6.txt", meta("0", "1"), "", "192.0.2.0/24\n", "not an IPv6 range"},
		{"upper case", meta("0", "1"), "", "2001:DB8::/32\n", "not written canonically"},
		{"uncompressed", meta("0", "1"), "", "2001:db8:0::/32\n", "not written canonically"},
		{"out of order", meta("2", "0"), "192.0.2.0/24\n10.0.0.0/8\n", "", "out of order"},
		{"repeated", meta("2", "0"), "10.0.0.0/8\n10.0.0.0/8\n", "", "out of order or repeated"},
		{"CRLF", meta("1", "0"), "10.0.0.0/8\r\n", "", "not a CIDR range"},
		{"blank line", meta("2", "0"), "10.0.0.0/8\n\n", "", "not a CIDR range"},
		{"no final line break", meta("1", "0"), "10.0.0.0/8", "", "does not end with a line break"},
		{"count mismatch", meta("2", "0"), "10.0.0.0/8\n", "", "has 1 ranges, but META.txt: ipv4_ranges is 2"},
		{"count not a number", meta("01", "0"), "10.0.0.0/8\n", "", "is not a count"},
		{"no ranges", meta("0", "0"), "", "", "no address ranges"},
		{"bad date", strings.Replace(meta("1", "0"), "2026-08-08", "2026-8-8", 1), "10.0.0.0/8\n", "", `updated "2026-8-8" is not a date`},
		{"impossible date", strings.Replace(meta("1", "0"), "2026-08-08", "2026-02-30", 1), "10.0.0.0/8\n", "", "not a date"},
		{"expires first", strings.Replace(meta("1", "0"), "2026-11-15", "2026-08-01", 1), "10.0.0.0/8\n", "", "must be after"},
		{"other format", strings.Replace(meta("1", "0"), "chatd-iplist/1", "chatd-iplist/2", 1), "10.0.0.0/8\n", "", `format is "chatd-iplist/2"`},
		{"missing meta line", strings.Replace(meta("1", "0"), "effective_from: 2026-08-17\n", "", 1), "10.0.0.0/8\n", "", "5 lines; want exactly 6"},
		{"meta lines swapped", strings.Replace(meta("1", "0"), "updated: 2026-08-08\neffective_from: 2026-08-17", "effective_from: 2026-08-17\nupdated: 2026-08-08", 1), "10.0.0.0/8\n", "", `line 2 is "effective_from`},
	}
	for _, tc := range cases {
		_, err := iplist.ParseZIP(signedZIP(t, tc.meta, tc.v4, tc.v6), opPub, now)
		if !errors.Is(err, iplist.ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v\nwant ErrMalformed with %q", tc.name, err, tc.msg)
		}
	}
}

func TestZIPStructure(t *testing.T) {
	z := zipOf(t, sign(t, sample(), opKey))
	_, files := unzip(t, z)
	for _, missing := range fileOrder {
		names := slices.DeleteFunc(slices.Clone(fileOrder), func(n string) bool { return n == missing })
		_, err := iplist.ParseZIP(rezip(t, names, files), opPub, now)
		if !errors.Is(err, iplist.ErrMissingFile) || !strings.Contains(err.Error(), "no "+missing) {
			t.Errorf("without %s: %v, want ErrMissingFile naming it", missing, err)
		}
	}
	// The order of the files does not matter.
	if _, err := iplist.ParseZIP(rezip(t, []string{iplist.SignatureFile, iplist.IPv6File, iplist.IPv4File, iplist.MetaFile}, files), opPub, now); err != nil {
		t.Errorf("reordered: %v", err)
	}
	files["README.txt"] = []byte("allow everything\n")
	for name, names := range map[string][]string{
		"extra file":     append(slices.Clone(fileOrder), "README.txt"),
		"duplicate file": append(slices.Clone(fileOrder), iplist.IPv4File),
	} {
		if _, err := iplist.ParseZIP(rezip(t, names, files), opPub, now); !errors.Is(err, iplist.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"not a ZIP": []byte("PK\x03\x04 not really"),
		"truncated": z[:len(z)/2],
		"JSON":      jsonOf(t, sign(t, sample(), opKey)),
	} {
		if _, err := iplist.ParseZIP(data, opPub, now); !errors.Is(err, iplist.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := iplist.ParseZIP(make([]byte, iplist.MaxSize+1), opPub, now); !errors.Is(err, iplist.ErrTooLarge) {
		t.Errorf("oversize ZIP: %v, want ErrTooLarge", err)
	}
}

// deflated compresses n zero bytes.
func deflated(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestCompression)
	chunk := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, len(chunk))
		fw.Write(chunk[:k])
		n -= k
	}
	fw.Close()
	return b.Bytes()
}

// TestZIPBomb: a file that unpacks to far more than its limit is refused, whether its header says
// so or lies, and verification allocates about the limit, not the unpacked size.
func TestZIPBomb(t *testing.T) {
	const bomb = 64 << 20 // 64 MiB of zeros, about 64 KB deflated: 64 times the limit
	payload := deflated(t, bomb)
	_, files := unzip(t, zipOf(t, sign(t, sample(), opKey)))
	for _, declared := range []uint64{bomb, 30, iplist.MaxFileSize} { // honest, then two lies
		lie := declared != bomb
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		for _, name := range fileOrder {
			if name != iplist.IPv4File {
				w, _ := zw.Create(name)
				w.Write(files[name])
				continue
			}
			h := &zip.FileHeader{Name: name, Method: zip.Deflate, CompressedSize64: uint64(len(payload)), UncompressedSize64: declared}
			w, err := zw.CreateRaw(h)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(payload)
		}
		zw.Close()
		if b.Len() > iplist.MaxSize {
			t.Fatalf("the bomb is %d bytes, over MaxSize", b.Len())
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := iplist.ParseZIP(b.Bytes(), opPub, now)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, iplist.ErrTooLarge) {
			t.Errorf("bomb declaring %d bytes: %v, want ErrTooLarge", declared, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 6<<20 {
			t.Errorf("bomb declaring %d bytes (lie: %v): verification allocated %d MiB", declared, lie, alloc>>20)
		}
		t.Logf("declares %d bytes: %v (allocated %d KiB)", declared, err, (after.TotalAlloc-before.TotalAlloc)>>10)
	}
}

func TestJSONStrict(t *testing.T) {
	good := jsonOf(t, sign(t, sample(), opKey))
	var fields map[string]json.RawMessage
	json.Unmarshal(good, &fields)
	build := func(edit func(map[string]json.RawMessage)) []byte {
		f := map[string]json.RawMessage{}
		for k, v := range fields {
			f[k] = v
		}
		edit(f)
		b, _ := json.Marshal(f)
		return b
	}
	cases := map[string]struct {
		data []byte
		err  error
		msg  string
	}{
		"unknown field":  {build(func(f map[string]json.RawMessage) { f["comment"] = json.RawMessage(`"hi"`) }), iplist.ErrMalformed, `unknown field "comment"`},
		"missing field":  {build(func(f map[string]json.RawMessage) { delete(f, "expires") }), iplist.ErrMalformed, `"expires" is missing`},
		"null array":     {build(func(f map[string]json.RawMessage) { f["ipv6"] = json.RawMessage(`null`) }), iplist.ErrMalformed, `"ipv6" is null`},
		"wrong type":     {build(func(f map[string]json.RawMessage) { f["ipv4"] = json.RawMessage(`"10.0.0.0/8"`) }), iplist.ErrMalformed, `field "ipv4"`},
		"line break":     {build(func(f map[string]json.RawMessage) { f["ipv4"] = json.RawMessage(`["31.13.64.0/18\n157.240.0.0/16"]`) }), iplist.ErrMalformed, "control character"},
		"bad key":        {build(func(f map[string]json.RawMessage) { f["operator_key"] = json.RawMessage(`"abc"`) }), iplist.ErrSignature, "operator_key is not"},
		"trailing data":  {append(slices.Clone(good), []byte(` {}`)...), iplist.ErrMalformed, "data after"},
		"repeated field": {[]byte(strings.Replace(string(good), `"ipv6":`, `"ipv4":["10.0.0.0/8"],"ipv6":`, 1)), iplist.ErrMalformed, `"ipv4" appears twice`},
		"array":          {[]byte(`[]`), iplist.ErrMalformed, "not a JSON object"},
		"truncated":      {good[:len(good)/2], iplist.ErrMalformed, ""},
		"oversize":       {make([]byte, iplist.MaxSize+1), iplist.ErrTooLarge, ""},
	}
	for name, tc := range cases {
		_, err := iplist.ParseJSON(tc.data, opPub, now)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v\nwant %v with %q", name, err, tc.err, tc.msg)
		}
	}
	// Field order and white space are free: the signature is over the rendered text.
	reordered := build(func(map[string]json.RawMessage) {}) // json.Marshal sorts map keys
	var indented bytes.Buffer
	json.Indent(&indented, reordered, "", "  ")
	if _, err := iplist.ParseJSON(indented.Bytes(), opPub, now); err != nil {
		t.Errorf("reordered and indented: %v", err)
	}
}

func TestParseFile(t *testing.T) {
	l, err := iplist.ParseFile([]byte(`
# the deployment's addresses
updated = 2026-08-08
effective_from = "2026-08-17"
ipv4 = ["157.240.0.0/16", " 31.13.64.0/18", "203.0.113.7"]
ipv6 = ["2A03:2880::/32", "2001:db8::1"]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := iplist.List{
		Updated: date("2026-08-08"), EffectiveFrom: date("2026-08-17"), Expires: date("2026-11-15"),
		IPv4: pfx("31.13.64.0/18", "157.240.0.0/16", "203.0.113.7/32"),
		IPv6: pfx("2001:db8::1/128", "2a03:2880::/32"),
	}
	if !equal(l, want) {
		t.Errorf("got %+v\nwant %+v", l, want)
	}
	l, err = iplist.ParseFile([]byte("updated = 2026-08-08\nexpires = 2027-08-08\nipv6 = [\"2001:db8::/32\"]\n"))
	if err != nil || !l.Expires.Equal(date("2027-08-08")) || !l.EffectiveFrom.Equal(date("2026-08-08")) || len(l.IPv4) != 0 {
		t.Errorf("explicit expiry: %+v %v", l, err)
	}
	for name, tc := range map[string]struct{ file, msg string }{
		"no updated":   {`ipv4 = ["10.0.0.0/8"]`, "updated is missing"},
		"typo":         {"updated = 2026-08-08\nipv4 = [\"10.0.0.0/8\"]\nexpire = 2027-01-01\n", `unknown key "expire"`},
		"bad CIDR":     {"updated = 2026-08-08\nipv4 = [\"10.0.0.0/8\", \"10.0.0/8\"]\n", `ipv4 entry 2: "10.0.0/8" is not a CIDR range`},
		"host bits":    {"updated = 2026-08-08\nipv4 = [\"10.1.0.0/8\"]\n", "the range is 10.0.0.0/8"},
		"bad date":     {"updated = \"08/08/2026\"\nipv4 = [\"10.0.0.0/8\"]\n", "not a date"},
		"date time":    {"updated = 2026-08-08T10:00:00Z\nipv4 = [\"10.0.0.0/8\"]\n", "not a date"},
		"not TOML":     {"updated: 2026-08-08", ""},
		"empty":        {"updated = 2026-08-08\n", "no address ranges"},
		"wrong family": {"updated = 2026-08-08\nipv4 = [\"2001:db8::/32\"]\n", "list it under ipv6"},
	} {
		if _, err := iplist.ParseFile([]byte(tc.file)); !errors.Is(err, iplist.ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrMalformed with %q", name, err, tc.msg)
		}
	}
	path := filepath.Join(t.TempDir(), "iplist.toml")
	os.WriteFile(path, []byte("updated = 2026-08-08\nipv4 = [\"10.0.0.0/33\"]\n"), 0o600)
	if _, err := iplist.LoadFile(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "ipv4 entry 1") {
		t.Errorf("LoadFile error does not name the file and entry: %v", err)
	}
	if _, err := iplist.LoadFile(path + ".missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestOpenSSLVerifies follows the package documentation's recipe to verify a ZIP without chatd.
func TestOpenSSLVerifies(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	_, files := unzip(t, zipOf(t, sign(t, sample(), opKey)))
	for name, data := range files {
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
	}
	// The steps of docs/operations.md, from the base64 key that "chatd keys" prints.
	script := `(printf '\060\052\060\005\006\003\053\145\160\003\041\000'; echo "$OPERATOR_KEY" | base64 -d) |
  openssl pkey -pubin -inform DER -out operator.pub.pem
cat META.txt ipv4.txt ipv6.txt > signed.txt
sed -n 's/^signature: //p' SIGNATURE | base64 -d > sig.bin
openssl pkeyutl -verify -pubin -inkey operator.pub.pem -rawin -in signed.txt -sigfile sig.bin`
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPERATOR_KEY="+b64(opPub))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "ipv4.txt"), []byte("0.0.0.0/0\n"), 0o600)
	cmd = exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPERATOR_KEY="+b64(opPub))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a tampered list:\n%s", out)
	}
}

// TestDocumentedVector verifies the example of docs/protocol.md §9.8, so that the format cannot
// drift from its documentation.
func TestDocumentedVector(t *testing.T) {
	const doc = `{"format":"chatd-iplist/1","updated":"2026-11-20","effective_from":"2026-12-01","expires":"2027-03-01",
 "ipv4":["31.13.64.0/18","157.240.0.0/16"],"ipv6":["2a03:2880::/32"],
 "operator_key":"HKg8K557ZTeLxVDzGBTJjzXMzpanNGG4XHpyDwJ5Jrs=",
 "signature":"KVBKZ+gW8SqTPSmshNyiiOuXDJuCEcuiOmsnbt8vyJT63AbkWKWb11IKW3RSBnq1Loqzw04wKa+CJ/hTcnb8Ag=="}`
	var key ed25519.PublicKey
	if err := json.Unmarshal([]byte(`"HKg8K557ZTeLxVDzGBTJjzXMzpanNGG4XHpyDwJ5Jrs="`), (*[]byte)(&key)); err != nil {
		t.Fatal(err)
	}
	l, err := iplist.ParseJSON([]byte(doc), key, date("2026-11-25"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version() != "2026-11-20.a79a0850" || l.Effective(date("2026-11-25")) || !l.Expires.Equal(date("2027-03-01")) {
		t.Errorf("documented list: %v", l)
	}
}

package iplist

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	fuzzPub = fuzzKey.Public().(ed25519.PublicKey)
	fuzzNow = time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
)

func fuzzSigned(f *testing.F) Signed {
	s, err := Sign(List{
		Updated:       time.Date(2026, 8, 8, 0, 0, 0, 0, time.UTC),
		EffectiveFrom: time.Date(2026, 8, 17, 0, 0, 0, 0, time.UTC),
		IPv4:          []netip.Prefix{netip.MustParsePrefix("157.240.0.0/16"), netip.MustParsePrefix("31.13.64.0/18")},
		IPv6:          []netip.Prefix{netip.MustParsePrefix("2a03:2880::/32")},
	}, fuzzKey)
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// checkSentinel fails unless err wraps one of the package's errors: every rejection is classified.
func checkSentinel(t *testing.T, err error) {
	for _, s := range []error{ErrMalformed, ErrMissingFile, ErrTooLarge, ErrSignature, ErrWrongKey, ErrExpired} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("unclassified error: %v", err)
}

// checkCanonical fails unless l is normalized and renders to signed text that parses back to l.
func checkCanonical(t *testing.T, l List) {
	n, err := Normalize(l)
	if err != nil {
		t.Fatalf("a parsed list does not normalize: %v", err)
	}
	if !bytes.Equal(n.signedBytes(), l.signedBytes()) {
		t.Fatalf("a parsed list is not in canonical form:\n%s\nnormalized:\n%s", l.signedBytes(), n.signedBytes())
	}
}

// FuzzParseZIP: ParseZIP never panics, classifies every error, and accepts only canonical lists.
func FuzzParseZIP(f *testing.F) {
	s := fuzzSigned(f)
	var z bytes.Buffer
	if err := WriteZIP(&z, s); err != nil {
		f.Fatal(err)
	}
	js, _ := json.Marshal(s)
	f.Add(z.Bytes())
	f.Add(z.Bytes()[:len(z.Bytes())-30])
	f.Add(js)
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseZIP(data, fuzzPub, fuzzNow)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		checkCanonical(t, l)
	})
}

// FuzzParseJSON: the same for ParseJSON.
func FuzzParseJSON(f *testing.F) {
	s := fuzzSigned(f)
	js, _ := json.Marshal(s)
	f.Add(js)
	f.Add(js[:len(js)/2])
	f.Add(bytes.Replace(js, []byte(`"ipv6"`), []byte(`"ipv4"`), 1))
	f.Add([]byte(`{"format":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseJSON(data, fuzzPub, fuzzNow)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		checkCanonical(t, l)
	})
}

// FuzzParseTexts reaches the text parser behind the signature check: a list it accepts renders
// back to exactly its input, so that one list has one signed text.
func FuzzParseTexts(f *testing.F) {
	meta, v4, v6 := fuzzSigned(f).List.texts()
	f.Add(meta, v4, v6)
	f.Add(meta, []byte("10.0.0.0/8\n"), []byte{})
	f.Add(bytes.Replace(meta, []byte("ipv6_ranges: 1"), []byte("ipv6_ranges: 2"), 1), v4, []byte("::/0\n2a03:2880::/32\n"))
	f.Add([]byte("format: chatd-iplist/1\n"), []byte("1.2.3.4/32"), []byte("::ffff:1.2.3.4/128\n"))
	f.Fuzz(func(t *testing.T, meta, v4, v6 []byte) {
		l, err := parseTexts(meta, v4, v6, zipNames)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		m2, a2, b2 := l.texts()
		if !bytes.Equal(meta, m2) || !bytes.Equal(v4, a2) || !bytes.Equal(v6, b2) {
			t.Fatalf("accepted text is not canonical:\n%q %q %q\nrenders as\n%q %q %q", meta, v4, v6, m2, a2, b2)
		}
		checkCanonical(t, l)
	})
}

// FuzzParseFile: the operator's list file never panics the parser, and what it accepts is
// normalized.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte("updated = 2026-08-08\neffective_from = \"2026-08-17\"\nipv4 = [\"157.240.0.0/16\", \"203.0.113.7\"]\nipv6 = [\"2a03:2880::/32\"]\n"))
	f.Add([]byte("updated = 2026-08-08\nexpires = 2026-08-08\nipv4 = [\"10.0.0.1/8\"]\n"))
	f.Add([]byte("updated = 9999-12-31\nipv6 = [\"::ffff:1.2.3.4/128\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseFile(data)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		checkCanonical(t, l)
		if !slices.IsSortedFunc(l.IPv4, comparePrefix) || !slices.IsSortedFunc(l.IPv6, comparePrefix) {
			t.Fatal("unsorted ranges")
		}
	})
}

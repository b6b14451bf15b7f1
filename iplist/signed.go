package iplist

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Signed is a list with the operator's signature, as Sign returns it. Write it with WriteZIP or as
// JSON (MarshalJSON).
type Signed struct {
	// List is the normalized list that was signed.
	List List
	// OperatorKey is the public half of the key that signed it.
	OperatorKey ed25519.PublicKey
	// Signature is the Ed25519 signature over the list's canonical text (64 bytes).
	Signature []byte
}

// Sign normalizes l (see Normalize) and signs its canonical text with the operator key. It fails
// like Normalize for an invalid list, and for a key that is not an Ed25519 private key.
func Sign(l List, key ed25519.PrivateKey) (Signed, error) {
	if len(key) != ed25519.PrivateKeySize {
		return Signed{}, fmt.Errorf("iplist: sign: the operator key has %d bytes, expected an Ed25519 private key of %d", len(key), ed25519.PrivateKeySize)
	}
	l, err := Normalize(l)
	if err != nil {
		return Signed{}, err
	}
	return Signed{List: l, OperatorKey: key.Public().(ed25519.PublicKey), Signature: ed25519.Sign(key, l.signedBytes())}, nil
}

func (s Signed) check() error {
	if len(s.OperatorKey) != ed25519.PublicKeySize || len(s.Signature) != ed25519.SignatureSize {
		return errors.New("iplist: not a signed list (make it with Sign)")
	}
	return nil
}

// jsonList is the JSON form. Its field order is the order MarshalJSON writes.
type jsonList struct {
	Format        string   `json:"format"`
	Updated       string   `json:"updated"`
	EffectiveFrom string   `json:"effective_from"`
	Expires       string   `json:"expires"`
	IPv4          []string `json:"ipv4"`
	IPv6          []string `json:"ipv6"`
	OperatorKey   string   `json:"operator_key"`
	Signature     string   `json:"signature"`
}

// MarshalJSON returns the JSON form (see the package documentation), on one line without a final
// line break.
func (s Signed) MarshalJSON() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	l := s.List
	return json.Marshal(jsonList{
		Format:        Format,
		Updated:       l.Updated.Format(DateLayout),
		EffectiveFrom: l.EffectiveFrom.Format(DateLayout),
		Expires:       l.Expires.Format(DateLayout),
		IPv4:          prefixStrings(l.IPv4),
		IPv6:          prefixStrings(l.IPv6),
		OperatorKey:   base64.StdEncoding.EncodeToString(s.OperatorKey),
		Signature:     base64.StdEncoding.EncodeToString(s.Signature),
	})
}

// FileName is the name chatd gives the ZIP: "chatd-iplist-<updated>.zip".
func (l List) FileName() string { return "chatd-iplist-" + l.Updated.Format(DateLayout) + ".zip" }

// WriteZIP writes the ZIP form of s to w: META.txt, ipv4.txt, ipv6.txt and SIGNATURE, deflated, each
// dated with the list's updated date, so that the same signed list always gives the same bytes.
func WriteZIP(w io.Writer, s Signed) error {
	if err := s.check(); err != nil {
		return err
	}
	meta, v4, v6 := s.List.texts()
	zw := zip.NewWriter(w)
	for _, f := range []struct {
		name string
		data []byte
	}{{MetaFile, meta}, {IPv4File, v4}, {IPv6File, v6}, {SignatureFile, renderSignature(s.OperatorKey, s.Signature)}} {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: s.List.Updated})
		if err != nil {
			return fmt.Errorf("iplist: write ZIP: %w", err)
		}
		if _, err := fw.Write(f.data); err != nil {
			return fmt.Errorf("iplist: write ZIP: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("iplist: write ZIP: %w", err)
	}
	return nil
}

func renderSignature(key, sig []byte) []byte {
	return []byte("operator_key: " + base64.StdEncoding.EncodeToString(key) + "\nsignature: " + base64.StdEncoding.EncodeToString(sig) + "\n")
}

// parseSignature reads SIGNATURE: the named key and the signature.
func parseSignature(data []byte) (key, sig []byte, err error) {
	lines := strings.Split(string(data), "\n")
	if len(lines) != 3 || lines[2] != "" {
		return nil, nil, fmt.Errorf("%w: %s is not two lines \"operator_key: …\" and \"signature: …\"", ErrSignature, SignatureFile)
	}
	k, ok1 := strings.CutPrefix(lines[0], "operator_key: ")
	s, ok2 := strings.CutPrefix(lines[1], "signature: ")
	if !ok1 || !ok2 {
		return nil, nil, fmt.Errorf("%w: %s is not two lines \"operator_key: …\" and \"signature: …\"", ErrSignature, SignatureFile)
	}
	return decodeKeyAndSignature(k, s, SignatureFile+": ")
}

func decodeKeyAndSignature(k, s, where string) (key, sig []byte, err error) {
	key, err = base64.StdEncoding.Strict().DecodeString(k)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, nil, fmt.Errorf("%w: %soperator_key is not standard base64 of a %d-byte Ed25519 key", ErrSignature, where, ed25519.PublicKeySize)
	}
	sig, err = base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: %ssignature is not standard base64 of %d bytes", ErrSignature, where, ed25519.SignatureSize)
	}
	return key, sig, nil
}

// ParseZIP verifies a list in the ZIP form with the operator key pub and returns it; now decides
// expiry. The checks and their errors are in the package documentation. Memory use is bounded by
// MaxSize and the per-file limits whatever the ZIP declares: a file is read only up to its limit.
func ParseZIP(data []byte, pub ed25519.PublicKey, now time.Time) (List, error) {
	if err := checkKey(pub); err != nil {
		return List{}, err
	}
	if len(data) > MaxSize {
		return List{}, fmt.Errorf("%w: the ZIP has %d bytes; at most %d", ErrTooLarge, len(data), MaxSize)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return List{}, fmt.Errorf("%w: not a ZIP file: %v", ErrMalformed, err)
	}
	limits := map[string]int64{MetaFile: maxSmallFile, IPv4File: MaxFileSize, IPv6File: MaxFileSize, SignatureFile: maxSmallFile}
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		limit, known := limits[f.Name]
		switch {
		case !known:
			return List{}, fmt.Errorf("%w: the ZIP holds %q; it may only hold %s, %s, %s and %s", ErrMalformed, truncate(f.Name), MetaFile, IPv4File, IPv6File, SignatureFile)
		case files[f.Name] != nil:
			return List{}, fmt.Errorf("%w: the ZIP holds %s twice", ErrMalformed, f.Name)
		case f.UncompressedSize64 > uint64(limit):
			return List{}, fmt.Errorf("%w: %s unpacks to %d bytes; at most %d", ErrTooLarge, f.Name, f.UncompressedSize64, limit)
		}
		files[f.Name] = f
	}
	contents := map[string][]byte{}
	for _, name := range []string{MetaFile, IPv4File, IPv6File, SignatureFile} {
		f := files[name]
		if f == nil {
			return List{}, fmt.Errorf("%w: the ZIP has no %s", ErrMissingFile, name)
		}
		if contents[name], err = readZIPFile(f, limits[name]); err != nil {
			return List{}, err
		}
	}
	key, sig, err := parseSignature(contents[SignatureFile])
	if err != nil {
		return List{}, err
	}
	return verify(contents[MetaFile], contents[IPv4File], contents[IPv6File], key, sig, pub, now, zipNames)
}

// readZIPFile reads f, failing once it passes limit bytes (the declared size may lie).
func readZIPFile(f *zip.File, limit int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit+1))
	switch {
	case int64(len(data)) > limit:
		return nil, fmt.Errorf("%w: %s unpacks to more than %d bytes", ErrTooLarge, f.Name, limit)
	case errors.Is(err, zip.ErrFormat):
		// Once open, archive/zip reads ErrFormat only for a file that unpacks to more than its
		// header says: a ZIP bomb.
		return nil, fmt.Errorf("%w: %s unpacks to more than the %d bytes its header declares", ErrTooLarge, f.Name, f.UncompressedSize64)
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, f.Name, err)
	}
	return data, nil
}

// ParseJSON verifies a list in the JSON form with the operator key pub and returns it; now decides
// expiry. Every field is required, and unknown or repeated fields, null arrays and trailing data are
// malformed. The checks and their errors are in the package documentation.
func ParseJSON(data []byte, pub ed25519.PublicKey, now time.Time) (List, error) {
	if err := checkKey(pub); err != nil {
		return List{}, err
	}
	if len(data) > MaxSize {
		return List{}, fmt.Errorf("%w: the JSON has %d bytes; at most %d", ErrTooLarge, len(data), MaxSize)
	}
	j, err := decodeJSON(data)
	if err != nil {
		return List{}, err
	}
	for _, fam := range []struct {
		name   string
		ranges []string
	}{{"ipv4", j.IPv4}, {"ipv6", j.IPv6}} {
		if len(fam.ranges) > MaxRanges {
			return List{}, fmt.Errorf("%w: %d %s ranges; at most %d", ErrTooLarge, len(fam.ranges), fam.name, MaxRanges)
		}
		for i, s := range fam.ranges {
			if hasControl(s) {
				return List{}, fmt.Errorf("%w: %s: %q holds a control character", ErrMalformed, jsonNames.entry(fam.name, i+1), truncate(s))
			}
		}
	}
	for _, f := range []struct{ name, v string }{{"format", j.Format}, {keyUpdated, j.Updated}, {keyEffectiveFrom, j.EffectiveFrom}, {keyExpires, j.Expires}} {
		if hasControl(f.v) {
			return List{}, fmt.Errorf("%w: %s %q holds a control character", ErrMalformed, f.name, truncate(f.v))
		}
	}
	key, sig, err := decodeKeyAndSignature(j.OperatorKey, j.Signature, "")
	if err != nil {
		return List{}, err
	}
	meta := renderMeta(j.Format, j.Updated, j.EffectiveFrom, j.Expires, len(j.IPv4), len(j.IPv6))
	return verify(meta, renderLines(j.IPv4), renderLines(j.IPv6), key, sig, pub, now, jsonNames)
}

// decodeJSON decodes one JSON object with exactly the fields of jsonList, each once.
func decodeJSON(data []byte) (jsonList, error) {
	var j jsonList
	fields := map[string]any{
		"format": &j.Format, keyUpdated: &j.Updated, keyEffectiveFrom: &j.EffectiveFrom, keyExpires: &j.Expires,
		"ipv4": &j.IPv4, "ipv6": &j.IPv6, "operator_key": &j.OperatorKey, "signature": &j.Signature,
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return j, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return j, fmt.Errorf("%w: not a JSON object: %v", ErrMalformed, err)
		}
		name, _ := tok.(string)
		dst, known := fields[name]
		switch {
		case !known:
			return j, fmt.Errorf("%w: unknown field %q", ErrMalformed, truncate(name))
		case seen[name]:
			return j, fmt.Errorf("%w: field %q appears twice", ErrMalformed, name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return j, fmt.Errorf("%w: field %q: %v", ErrMalformed, name, err)
		}
		if string(raw) == "null" {
			return j, fmt.Errorf("%w: field %q is null", ErrMalformed, name)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return j, fmt.Errorf("%w: field %q: %v", ErrMalformed, name, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return j, fmt.Errorf("%w: not a JSON object: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return j, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	for _, name := range []string{"format", keyUpdated, keyEffectiveFrom, keyExpires, "ipv4", "ipv6", "operator_key"} {
		if !seen[name] {
			return j, fmt.Errorf("%w: the field %q is missing", ErrMalformed, name)
		}
	}
	if !seen["signature"] {
		return j, fmt.Errorf("%w: the field \"signature\" is missing", ErrSignature)
	}
	return j, nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func checkKey(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("iplist: the operator key to verify with has %d bytes, expected %d (pin operator_key from /v1/config)", len(pub), ed25519.PublicKeySize)
	}
	return nil
}

// verify checks the named key and the signature over meta‖v4‖v6, then parses them and checks expiry.
func verify(meta, v4, v6, key, sig []byte, pub ed25519.PublicKey, now time.Time, nm naming) (List, error) {
	if !bytes.Equal(key, pub) {
		return List{}, fmt.Errorf("%w: it names operator key %s, not the pinned %s", ErrWrongKey,
			base64.StdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(pub))
	}
	if !ed25519.Verify(pub, slices.Concat(meta, v4, v6), sig) {
		return List{}, fmt.Errorf("%w: the signature does not match the content", ErrSignature)
	}
	l, err := parseTexts(meta, v4, v6, nm)
	if err != nil {
		return List{}, err
	}
	if l.Expired(now) {
		return List{}, fmt.Errorf("%w: it expired on %s (updated %s); the server operator must publish a current list", ErrExpired,
			l.Expires.Format(DateLayout), l.Updated.Format(DateLayout))
	}
	return l, nil
}

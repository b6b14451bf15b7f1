package regclient_test

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client/regclient"
	"github.com/chatd-dev/chatd/iplist"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi/regtypes"
)

// TestIPList fetches a dev node's list and verifies it with the operator key pinned from its
// configuration.
func TestIPList(t *testing.T) {
	n, _ := startNode(t)
	rc := devClient(t, n)
	cc, err := rc.Config(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pinned, _ := base64.StdEncoding.DecodeString(cc.OperatorKey)
	l, err := rc.IPList(t.Context(), pinned)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} // the dev list of a localhost server
	if !slices.Equal(l.Ranges(), want) || l.Version() != cc.IPListVersion {
		t.Errorf("list %v (version %s), want %v (version %s)", l.Ranges(), l.Version(), want, cc.IPListVersion)
	}

	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := rc.IPList(t.Context(), other); !errors.Is(err, iplist.ErrWrongKey) || !strings.Contains(err.Error(), n.HTTPSURL) {
		t.Errorf("another operator's key: %v, want ErrWrongKey naming the URL", err)
	}
	if _, err := rc.IPList(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "pin operator_key") {
		t.Errorf("no key: %v", err)
	}
}

func TestIPListNotPublished(t *testing.T) {
	n := nodetest.Start(t, node.Config{IPListVersion: "elsewhere", Logger: slog.New(slog.DiscardHandler)})
	_, err := devClient(t, n).IPList(t.Context(), n.OperatorKey)
	asAPIError(t, err, http.StatusNotFound, regtypes.CodeNoIPList)
}

// TestIPListHostile: what a hostile or broken server (or a proxy) answers is refused with the
// matching error.
func TestIPListHostile(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	signed, err := iplist.Sign(iplist.List{Updated: time.Now().UTC(), IPv4: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, key)
	if err != nil {
		t.Fatal(err)
	}
	var good bytes.Buffer
	iplist.WriteZIP(&good, signed)
	expired, _ := iplist.Sign(iplist.List{Updated: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), IPv4: signed.List.IPv4}, key)
	var old bytes.Buffer
	iplist.WriteZIP(&old, expired)

	for name, tc := range map[string]struct {
		ct   string
		body []byte
		err  error
		msg  string
	}{
		"good":      {"application/zip", good.Bytes(), nil, ""},
		"tampered":  {"application/zip", tamper(t, good.Bytes()), iplist.ErrSignature, ""},
		"expired":   {"application/zip", old.Bytes(), iplist.ErrExpired, "expired on 2020-03-31"},
		"truncated": {"application/zip", good.Bytes()[:100], iplist.ErrMalformed, ""},
		"oversize":  {"application/zip", make([]byte, iplist.MaxSize+10), iplist.ErrTooLarge, ""},
		"a proxy":   {"text/html", []byte("<html>blocked</html>"), nil, "text/html instead of a ZIP"},
	} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/iplist.zip" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", tc.ct)
			w.Write(tc.body)
		}))
		rc := &regclient.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
		l, err := rc.IPList(t.Context(), pub)
		srv.Close()
		switch {
		case tc.err == nil && tc.msg == "":
			if err != nil || len(l.IPv4) != 1 {
				t.Errorf("%s: %v %v", name, l, err)
			}
		case tc.err != nil && !errors.Is(err, tc.err), !strings.Contains(errString(err), tc.msg):
			t.Errorf("%s: %v, want %v %q", name, err, tc.err, tc.msg)
		}
	}
	if _, err := (&regclient.Client{BaseURL: "http://example.com"}).IPList(t.Context(), pub); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("plain HTTP URL: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// tamper adds a range to ipv4.txt (and its count to META.txt) and keeps the signature.
func tamper(t *testing.T, z []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range zr.File {
		rc, _ := f.Open()
		data, _ := io.ReadAll(rc)
		rc.Close()
		switch f.Name {
		case iplist.IPv4File:
			data = append(data, "240.0.0.0/4\n"...)
		case iplist.MetaFile:
			data = bytes.Replace(data, []byte("ipv4_ranges: 1"), []byte("ipv4_ranges: 2"), 1)
		}
		w, _ := zw.Create(f.Name)
		w.Write(data)
	}
	zw.Close()
	return b.Bytes()
}

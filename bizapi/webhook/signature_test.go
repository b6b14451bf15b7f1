package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSignKnownValue(t *testing.T) {
	// Independent computation of the documented scheme.
	body := []byte(`{"statuses":[]}`)
	at := time.Unix(1700000000, 999)
	m := hmac.New(sha256.New, []byte("k"))
	m.Write([]byte("1700000000." + string(body)))
	want := "t=1700000000,v1=" + hex.EncodeToString(m.Sum(nil))
	if got := Sign("k", at, body); got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	const secret = "s3cret"
	body := []byte(`{"messages":[{"id":"ABGG1"}]}`)
	at := time.Unix(1700000000, 0)
	good := Sign(secret, at, body)
	v1 := good[strings.Index(good, "v1=")+3:]
	other := Sign("old-secret", at, body)
	otherV1 := other[strings.Index(other, "v1=")+3:]

	for _, c := range []struct {
		name   string
		header string
		body   []byte
		now    time.Time
		tol    time.Duration
		want   error
	}{
		{"valid", good, body, at, time.Minute, nil},
		{"valid, spaces", "t=1700000000, v1=" + v1, body, at, time.Minute, nil},
		{"rotation: second v1 matches", "t=1700000000,v1=" + otherV1 + ",v1=" + v1, body, at, time.Minute, nil},
		{"unknown key ignored", "t=1700000000,v0=zz,v1=" + v1, body, at, time.Minute, nil},
		{"receiver clock behind", good, body, at.Add(-time.Minute), time.Minute, nil},
		{"no time check", good, body, at.Add(1000 * time.Hour), 0, nil},
		{"tampered body", good, []byte(`{"messages":[{"id":"ABGG2"}]}`), at, time.Minute, ErrSignatureMismatch},
		{"extra byte", good, append(append([]byte{}, body...), ' '), at, time.Minute, ErrSignatureMismatch},
		{"other secret only", other, body, at, time.Minute, ErrSignatureMismatch},
		{"timestamp changed", "t=1700000001,v1=" + v1, body, at, time.Minute, ErrSignatureMismatch},
		{"too old", good, body, at.Add(61 * time.Second), time.Minute, ErrSignatureTimestamp},
		{"too new", good, body, at.Add(-61 * time.Second), time.Minute, ErrSignatureTimestamp},
		{"empty", "", body, at, time.Minute, ErrSignatureHeader},
		{"no t", "v1=" + v1, body, at, time.Minute, ErrSignatureHeader},
		{"no v1", "t=1700000000", body, at, time.Minute, ErrSignatureHeader},
		{"two t", "t=1700000000,t=1700000000,v1=" + v1, body, at, time.Minute, ErrSignatureHeader},
		{"bad t", "t=abc,v1=" + v1, body, at, time.Minute, ErrSignatureHeader},
		{"bad hex", "t=1700000000,v1=xyz", body, at, time.Minute, ErrSignatureHeader},
		{"short v1", "t=1700000000,v1=abcd", body, at, time.Minute, ErrSignatureHeader},
		{"no =", "t=1700000000,v1", body, at, time.Minute, ErrSignatureHeader},
	} {
		if err := Verify(secret, c.header, c.body, c.now, c.tol); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}

// Example_receiver is the receiving end: verify the raw body, acknowledge, then process.
func Example_receiver() {
	secret := "whsec_example"
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
		if err := Verify(secret, r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := httptest.NewServer(hook)
	defer srv.Close()

	body := []byte(`{"statuses":[{"id":"gBEG1","status":"read"}]}`)
	send := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
		req.Header.Set(HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	fmt.Println(send(Sign(secret, time.Now(), body)))
	fmt.Println(send(Sign("wrong", time.Now(), body)))
	// Output:
	// 200
	// 401
}

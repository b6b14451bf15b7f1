package webhook

import (
	"encoding/json"
	"testing"

	"github.com/chatd-dev/chatd/bizapi/store"
)

// ForStatus writes the bytes json.Marshal would, on its fast path and off it.
func TestForStatusBytes(t *testing.T) {
	e := &store.ErrorInfo{Code: 1013, Title: "User is not valid", Details: "+1555 <x>"}
	for _, c := range []struct {
		id, to, status string
		at             int64
		e              *store.ErrorInfo
	}{
		{"gBEG0123456789abcdef-_ABCDEF", "15550000002", "sent", 1700000000, nil},
		{"gBEGx", "15550000002", "delivered", 0, nil},
		{"gBEGx", "15550000002", "failed", -5, e},
		{`we"ird\\id`, "1555", "read", 1, nil},
		{"<html>&", "1555", "read", 1, nil},
		{"tab\there", "1555", "read", 1, nil},
		{"ünïcode", "1555", "read", 1, nil},
		{"", "", "", 0, nil},
	} {
		s := Status{ID: c.id, RecipientID: c.to, Status: c.status, Timestamp: unix(c.at)}
		if c.e != nil {
			s.Errors = []store.ErrorInfo{*c.e}
		}
		want, _ := json.Marshal(StatusPayload{Statuses: []Status{s}})
		if got := ForStatus(c.id, c.to, c.status, c.at, c.e); string(got) != string(want) {
			t.Errorf("ForStatus(%q, %q, %q, %d) =\n%s\nwant\n%s", c.id, c.to, c.status, c.at, got, want)
		}
	}
}

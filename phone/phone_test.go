package phone

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string // substring of the reason; "" means success
	}{
		{in: "+1 555-123-4567", want: "15551234567"},
		{in: "+1 (555) 123 4567", want: "15551234567"},
		{in: "+(555) 123 4567", want: "5551234567"},
		{in: "15551234567", want: "15551234567"},
		{in: "  +44.20.7946.0018 ", want: "442079460018"},
		{in: "+4915123456789", want: "4915123456789"},
		{in: "12345678", want: "12345678"},               // 8 digits: minimum
		{in: "123456789012345", want: "123456789012345"}, // 15 digits: maximum
		{in: "+1\u00a0555\t123 4567", want: "15551234567"},
		{in: "", wantErr: "is empty"},
		{in: "   ", wantErr: "is empty"},
		{in: "+", wantErr: "no digits"},
		{in: "()-.", wantErr: "no digits"},
		{in: "1234567", wantErr: "has 7 digits"},
		{in: "1234567890123456", wantErr: "has 16 digits"},
		{in: "+0155512345", wantErr: "starts with 0"},
		{in: "0044 20 7946 0018", wantErr: "starts with 0"},
		{in: "1-800-FLOWERS", wantErr: "letter 'F'"},
		{in: "++15551234567", wantErr: "'+' that is not at the start"},
		{in: "1555+1234567", wantErr: "'+' that is not at the start"},
		{in: "1555/123/4567", wantErr: "contains '/'"},
		{in: "1555١٢٣4567", wantErr: "contains '١'"}, // non-ASCII digit
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Normalize(tt.in)
			checkResult(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestJoin(t *testing.T) {
	tests := []struct {
		cc, number string
		want       string
		wantErr    string
	}{
		{cc: "1", number: "555-123-4567", want: "15551234567"},
		{cc: "+44", number: "20 7946 0018", want: "442079460018"},
		{cc: " 49 ", number: "(151) 2345.6789", want: "4915123456789"},
		{cc: "39", number: "06 1234 5678", want: "390612345678"}, // Italian leading 0 kept
		{cc: "", number: "5551234567", wantErr: "country code is empty"},
		{cc: "1a", number: "5551234567", wantErr: "country code contains 'a'"},
		{cc: "1234", number: "5551234", wantErr: "country code has 4 digits"},
		{cc: "01", number: "5551234567", wantErr: "country code starts with 0"},
		{cc: "1", number: "", wantErr: "national number is empty"},
		{cc: "1", number: "+15551234567", wantErr: "national number starts with '+'"},
		{cc: "1", number: "--", wantErr: "national number contains no digits"},
		{cc: "1", number: "555 CALL NOW", wantErr: "letter 'C'"},
		{cc: "1", number: "555", wantErr: "has 4 digits"},
		{cc: "1", number: "5551234567890123", wantErr: "has 17 digits"},
	}
	for _, tt := range tests {
		t.Run(tt.cc+"|"+tt.number, func(t *testing.T) {
			got, err := Join(tt.cc, tt.number)
			checkResult(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func checkResult(t *testing.T, got string, err error, want, wantErr string) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		return
	}
	if err == nil {
		t.Fatalf("got %q, want an error containing %q", got, wantErr)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v does not wrap ErrInvalid", err)
	}
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *InvalidError", err)
	}
	if !strings.Contains(ie.Reason, wantErr) {
		t.Fatalf("reason %q does not contain %q", ie.Reason, wantErr)
	}
	if got != "" {
		t.Fatalf("got %q together with an error", got)
	}
}

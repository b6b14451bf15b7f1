package phone

import (
	"strings"
	"unicode"
)

// Limits of an E.164 number as accepted by chatd (country code included).
const (
	MinDigits = 8
	MaxDigits = 15
)

// Normalize turns a phone number as a person types it into E.164 digits
// without '+'.
//
// It accepts one optional leading '+' and ignores spaces, '-', '.', '(' and
// ')' anywhere, so "+1 555-123-4567", "+1 (555) 123 4567" and "15551234567"
// all give "15551234567". The result must have MinDigits to MaxDigits digits
// and must not start with 0 (the number has to begin with its country code,
// not with a trunk prefix or "00"). Anything else — letters, other symbols, a
// '+' in the middle, too few or too many digits — returns an [*InvalidError]
// wrapping [ErrInvalid].
func Normalize(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", invalid("is empty; send the number in international format, e.g. +15551234567")
	}
	s = strings.TrimPrefix(s, "+")
	digits, err := digitsOnly(s)
	if err != nil {
		return "", err
	}
	return check(digits)
}

// Join builds a normalized number from a country code ("1", "+44") and a
// national number ("555 123 4567"), for callers that collect the two
// separately. The national number is used as given: a trunk prefix such as
// the leading 0 of many European numbers must already be removed (it is part
// of the number in a few countries, e.g. Italy, so Join cannot drop it).
func Join(cc, number string) (string, error) {
	cc = strings.TrimPrefix(strings.TrimSpace(cc), "+")
	if cc == "" {
		return "", invalid("country code is empty; give 1 to 3 digits, e.g. 1 or 44")
	}
	for _, r := range cc {
		if r < '0' || r > '9' {
			return "", invalid("country code contains %q; give 1 to 3 digits, e.g. 1 or 44", r)
		}
	}
	if len(cc) > 3 {
		return "", invalid("country code has %d digits; country codes have 1 to 3 digits", len(cc))
	}
	if cc[0] == '0' {
		return "", invalid("country code starts with 0; give it without the international prefix, e.g. 44 instead of 0044")
	}
	number = strings.TrimSpace(number)
	if number == "" {
		return "", invalid("national number is empty")
	}
	if strings.HasPrefix(number, "+") {
		return "", invalid("national number starts with '+'; give the country code separately or use the whole international number")
	}
	digits, err := digitsOnly(number)
	if err != nil {
		return "", err
	}
	if digits == "" {
		return "", invalid("national number contains no digits")
	}
	return check(cc + digits)
}

// digitsOnly drops the allowed separators and rejects everything else that
// is not an ASCII digit.
func digitsOnly(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == '-', r == '.', r == '(', r == ')', unicode.IsSpace(r):
			// separator
		case r == '+':
			return "", invalid("has a '+' that is not at the start; only one leading '+' is allowed")
		case unicode.IsLetter(r):
			return "", invalid("contains the letter %q; use digits only", r)
		default:
			return "", invalid("contains %q; use digits, spaces, '-', '.', '(' and ')' only", r)
		}
	}
	return b.String(), nil
}

func check(digits string) (string, error) {
	switch n := len(digits); {
	case n == 0:
		return "", invalid("contains no digits")
	case n < MinDigits:
		return "", invalid("has %d digits; a number in international format has %d to %d digits including the country code", n, MinDigits, MaxDigits)
	case n > MaxDigits:
		return "", invalid("has %d digits; a number in international format has at most %d digits including the country code", n, MaxDigits)
	}
	if digits[0] == '0' {
		return "", invalid("starts with 0; begin with the country code (e.g. +1 or +44), not with a trunk prefix or 00")
	}
	return digits, nil
}

package phone

import (
	"errors"
	"fmt"
)

// ErrInvalid is returned (wrapped in an [*InvalidError]) by [Normalize] and
// [Join] when the input is not a usable international phone number.
var ErrInvalid = errors.New("phone: invalid number")

// InvalidError says why a number was rejected. errors.Is(err, ErrInvalid)
// reports true for it; callers that show the reason to a person can take
// Reason with errors.As.
type InvalidError struct {
	// Reason is a short, human sentence fragment saying what is wrong and
	// what to change, e.g. "has 7 digits; a number in international format
	// has 8 to 15 digits including the country code".
	Reason string
}

func (e *InvalidError) Error() string { return ErrInvalid.Error() + ": " + e.Reason }

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

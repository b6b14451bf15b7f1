package settings

import "errors"

// ErrMalformed is returned (wrapped) by [Parse] and [Settings.Patch] when the
// document is not a JSON object; the wrapping error says where it broke.
var ErrMalformed = errors.New("settings: malformed JSON")

// KeyError is returned by [Parse] and [Settings.Patch] for a key that is
// unknown, has the wrong type or a value out of range. Key is the dotted
// name ("webhooks.max_concurrent_requests"); Reason says what is allowed.
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Reason }

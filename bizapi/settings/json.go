package settings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// supportedKeys lists the supported keys in dotted form, in the order of the package comment.
var supportedKeys = []string{
	"webhooks.url",
	"webhooks.secret",
	"webhooks.max_concurrent_requests",
	"webhooks.max_callbacks_per_request",
	"webhooks.message.sent",
	"webhooks.message.delivered",
	"webhooks.message.read",
	"sent_status",
	"callback_persist",
	"callback_backoff_delay_ms",
	"max_callback_backoff_delay_ms",
}

// Parse reads a stored settings document (as written by [Settings.Marshal]) on
// top of the defaults. nil or an empty document gives [Defaults]. Keys this
// version does not know are ignored (a newer version may have written them);
// known keys are checked as in a PATCH.
func Parse(doc json.RawMessage) (Settings, error) {
	s := Defaults()
	if len(bytes.TrimSpace(doc)) == 0 {
		return s, nil
	}
	if err := s.apply(doc, false); err != nil {
		return Defaults(), err
	}
	return s, nil
}

// Patch returns s with the keys present in body changed (PATCH
// /v1/settings/application; see the package comment for the accepted
// shapes). s itself is not modified. The error is a *[KeyError] naming the
// first offending key (in sorted order), or wraps [ErrMalformed].
func (s Settings) Patch(body []byte) (Settings, error) {
	n := s
	if err := n.apply(body, true); err != nil {
		return s, err
	}
	return n, nil
}

// apply sets the keys of the document on s. strict refuses unknown keys.
func (s *Settings) apply(doc []byte, strict bool) error {
	top, err := object(doc, "")
	if err != nil {
		return err
	}
	if inner, ok := top["settings"]; ok {
		for k := range top {
			if k != "settings" && k != "meta" && strict {
				return &KeyError{Key: k, Reason: `unexpected next to "settings"; send either {"settings":{"application":{…}}} or the application object alone`}
			}
		}
		wrap, err := object(inner, "settings")
		if err != nil {
			return err
		}
		for k := range wrap {
			if k != "application" && strict {
				return &KeyError{Key: "settings." + k, Reason: `unknown settings group; bizapi has only "application"`}
			}
		}
		app, ok := wrap["application"]
		if !ok {
			return &KeyError{Key: "settings.application", Reason: "missing"}
		}
		if top, err = object(app, "settings.application"); err != nil {
			return err
		}
	}
	if err := s.applyTop(top, strict); err != nil {
		return err
	}
	if s.MaxCallbackBackoffDelayMS < s.CallbackBackoffDelayMS {
		return &KeyError{Key: "max_callback_backoff_delay_ms", Reason: fmt.Sprintf(
			"%d is less than callback_backoff_delay_ms (%d); the cap must be at least the step",
			s.MaxCallbackBackoffDelayMS, s.CallbackBackoffDelayMS)}
	}
	return nil
}

func (s *Settings) applyTop(top map[string]json.RawMessage, strict bool) error {
	def := Defaults()
	return members(top, "", strict, func(k, key string, v json.RawMessage) (bool, error) {
		switch k {
		case "webhooks":
			return true, s.applyWebhooks(v, strict)
		case "sent_status":
			return true, optBoolValue(v, key, &s.SentStatus)
		case "callback_persist":
			return true, boolValue(v, key, &s.CallbackPersist, def.CallbackPersist)
		case "callback_backoff_delay_ms":
			return true, intValue(v, key, &s.CallbackBackoffDelayMS, def.CallbackBackoffDelayMS, MinBackoffDelayMS, MaxBackoffDelayMS)
		case "max_callback_backoff_delay_ms":
			return true, intValue(v, key, &s.MaxCallbackBackoffDelayMS, def.MaxCallbackBackoffDelayMS, MinMaxBackoffDelayMS, MaxMaxBackoffDelayMS)
		}
		return false, nil
	})
}

func (s *Settings) applyWebhooks(raw json.RawMessage, strict bool) error {
	def := Defaults().Webhooks
	if isNull(raw) {
		s.Webhooks = def
		return nil
	}
	obj, err := object(raw, "webhooks")
	if err != nil {
		return err
	}
	w := &s.Webhooks
	return members(obj, "webhooks.", strict, func(k, key string, v json.RawMessage) (bool, error) {
		switch k {
		case "url":
			return true, urlValue(v, key, &w.URL)
		case "secret":
			return true, secretValue(v, key, &w.Secret)
		case "max_concurrent_requests":
			return true, intValue(v, key, &w.MaxConcurrentRequests, def.MaxConcurrentRequests, MinConcurrentRequests, MaxConcurrentRequests)
		case "max_callbacks_per_request":
			return true, intValue(v, key, &w.MaxCallbacksPerRequest, def.MaxCallbacksPerRequest, MinCallbacksPerRequest, MaxCallbacksPerRequest)
		case "message":
			return true, w.applyMessage(v, strict)
		}
		return false, nil
	})
}

func (w *Webhooks) applyMessage(raw json.RawMessage, strict bool) error {
	def := Defaults().Webhooks.Message
	if isNull(raw) {
		w.Message = def
		return nil
	}
	obj, err := object(raw, "webhooks.message")
	if err != nil {
		return err
	}
	m := &w.Message
	return members(obj, "webhooks.message.", strict, func(k, key string, v json.RawMessage) (bool, error) {
		switch k {
		case "sent":
			return true, optBoolValue(v, key, &m.Sent)
		case "delivered":
			return true, boolValue(v, key, &m.Delivered, def.Delivered)
		case "read":
			return true, boolValue(v, key, &m.Read, def.Read)
		}
		return false, nil
	})
}

// members calls set for each member of obj in key order, with key = path + k for errors. set
// reports whether it knows k; an unknown key is an error when strict (a PATCH), and ignored
// otherwise (a stored document may come from a newer bizapi).
func members(obj map[string]json.RawMessage, path string, strict bool, set func(k, key string, v json.RawMessage) (bool, error)) error {
	for _, k := range sortedKeys(obj) {
		key := path + k
		known, err := set(k, key, obj[k])
		if err == nil && !known && strict {
			err = unknown(key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// object decodes a JSON object into its members. key names it in errors ("" for the document).
func object(raw []byte, key string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := json.Unmarshal(raw, &m)
	if err == nil && m == nil {
		err = &json.UnmarshalTypeError{Value: "null"} // null is not an object here
	}
	if err == nil {
		return m, nil
	}
	if key == "" {
		var se *json.SyntaxError
		if len(bytes.TrimSpace(raw)) == 0 {
			return nil, fmt.Errorf("%w: the body is empty; send a JSON object", ErrMalformed)
		}
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: %v (at byte %d)", ErrMalformed, err, se.Offset)
		}
		return nil, fmt.Errorf("%w: the body must be a JSON object", ErrMalformed)
	}
	return nil, &KeyError{Key: key, Reason: "must be an object"}
}

func unknown(key string) error {
	return &KeyError{Key: key, Reason: "unknown setting; bizapi supports " + strings.Join(supportedKeys, ", ")}
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func kind(raw json.RawMessage) byte {
	if len(raw) == 0 {
		return 0
	}
	return raw[0] // json.RawMessage members of a decoded object carry no leading space
}

func boolValue(raw json.RawMessage, key string, dst *bool, def bool) error {
	switch string(raw) {
	case "true":
		*dst = true
	case "false":
		*dst = false
	case "null":
		*dst = def
	default:
		return &KeyError{Key: key, Reason: "must be true or false, got " + shortJSON(raw)}
	}
	return nil
}

func optBoolValue(raw json.RawMessage, key string, dst *OptBool) error {
	switch string(raw) {
	case "true":
		*dst = True
	case "false":
		*dst = False
	case "null":
		*dst = Unset
	default:
		return &KeyError{Key: key, Reason: "must be true or false (or null to unset), got " + shortJSON(raw)}
	}
	return nil
}

func intValue(raw json.RawMessage, key string, dst *int, def, lo, hi int) error {
	if isNull(raw) {
		*dst = def
		return nil
	}
	allowed := fmt.Sprintf("allowed: a whole number from %d to %d", lo, hi)
	if c := kind(raw); c != '-' && (c < '0' || c > '9') {
		return &KeyError{Key: key, Reason: "must be a number, got " + shortJSON(raw) + "; " + allowed}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return &KeyError{Key: key, Reason: shortJSON(raw) + " is not a whole number; " + allowed}
	}
	if n < int64(lo) || n > int64(hi) {
		return &KeyError{Key: key, Reason: fmt.Sprintf("%d is out of range; %s", n, allowed)}
	}
	*dst = int(n)
	return nil
}

func stringValue(raw json.RawMessage, key string) (string, error) {
	var v string
	if kind(raw) != '"' || json.Unmarshal(raw, &v) != nil {
		return "", &KeyError{Key: key, Reason: "must be a string, got " + shortJSON(raw)}
	}
	return v, nil
}

func urlValue(raw json.RawMessage, key string, dst *string) error {
	if isNull(raw) {
		*dst = ""
		return nil
	}
	v, err := stringValue(raw, key)
	if err != nil {
		return err
	}
	v = strings.TrimSpace(v)
	if v == "" {
		*dst = ""
		return nil
	}
	if err := checkURL(v); err != "" {
		return &KeyError{Key: key, Reason: err + `; allowed: "" (no callbacks) or an absolute http:// or https:// URL of at most 2048 bytes`}
	}
	*dst = v
	return nil
}

func checkURL(v string) string {
	if len(v) > MaxURLBytes {
		return fmt.Sprintf("is %d bytes long", len(v))
	}
	u, err := url.Parse(v)
	if err != nil {
		return "is not a URL (" + err.Error() + ")"
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Sprintf("%q has scheme %q", v, u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Sprintf("%q has no host", v)
	}
	return ""
}

func secretValue(raw json.RawMessage, key string, dst *string) error {
	if isNull(raw) {
		*dst = ""
		return nil
	}
	v, err := stringValue(raw, key)
	if err != nil {
		return err
	}
	switch {
	case v == SecretMask: // GET output sent back: keep the secret
	case v == "":
		*dst = ""
	case len(v) < MinSecretBytes || len(v) > MaxSecretBytes:
		return &KeyError{Key: key, Reason: fmt.Sprintf(`has %d bytes; allowed: "" (unsigned callbacks) or %d to %d bytes`, len(v), MinSecretBytes, MaxSecretBytes)}
	default:
		*dst = v
	}
	return nil
}

// shortJSON quotes a value for an error message, cut to 40 bytes.
func shortJSON(raw json.RawMessage) string {
	s := string(raw)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// The JSON shapes of the application object.
type appJSON struct {
	CallbackBackoffDelayMS    int          `json:"callback_backoff_delay_ms"`
	CallbackPersist           bool         `json:"callback_persist"`
	MaxCallbackBackoffDelayMS int          `json:"max_callback_backoff_delay_ms"`
	SentStatus                *bool        `json:"sent_status,omitempty"`
	Webhooks                  webhooksJSON `json:"webhooks"`
}

type webhooksJSON struct {
	URL                    string      `json:"url"`
	MaxConcurrentRequests  int         `json:"max_concurrent_requests"`
	MaxCallbacksPerRequest int         `json:"max_callbacks_per_request"`
	Message                messageJSON `json:"message"`
	Secret                 string      `json:"secret,omitempty"`
}

type messageJSON struct {
	Sent      *bool `json:"sent,omitempty"`
	Delivered bool  `json:"delivered"`
	Read      bool  `json:"read"`
}

type publicJSON struct {
	Settings struct {
		Application appJSON `json:"application"`
	} `json:"settings"`
}

func optPtr(o OptBool) *bool {
	if !o.Set() {
		return nil
	}
	b := o.Or(false)
	return &b
}

func (s Settings) app() appJSON {
	return appJSON{
		CallbackBackoffDelayMS:    s.CallbackBackoffDelayMS,
		CallbackPersist:           s.CallbackPersist,
		MaxCallbackBackoffDelayMS: s.MaxCallbackBackoffDelayMS,
		SentStatus:                optPtr(s.SentStatus),
		Webhooks: webhooksJSON{
			URL:                    s.Webhooks.URL,
			MaxConcurrentRequests:  s.Webhooks.MaxConcurrentRequests,
			MaxCallbacksPerRequest: s.Webhooks.MaxCallbacksPerRequest,
			Secret:                 s.Webhooks.Secret,
			Message: messageJSON{
				Sent:      optPtr(s.Webhooks.Message.Sent),
				Delivered: s.Webhooks.Message.Delivered,
				Read:      s.Webhooks.Message.Read,
			},
		},
	}
}

// Marshal returns the document to store: the application object with the
// secret and with unset keys left out, so that [Parse] gives back s.
func (s Settings) Marshal() json.RawMessage {
	b, err := json.Marshal(s.app())
	if err != nil {
		panic("settings: " + err.Error()) // plain structs of strings, ints and bools
	}
	return b
}

// Public returns the GET /v1/settings/application document:
// {"settings":{"application":{…}}} with the effective webhooks.message.sent,
// sent_status only when set, and webhooks.secret as "***" when set (absent
// otherwise).
func (s Settings) Public() json.RawMessage {
	var p publicJSON
	p.Settings.Application = s.app()
	sent := s.SendSent()
	p.Settings.Application.Webhooks.Message.Sent = &sent
	if s.Webhooks.Secret != "" {
		p.Settings.Application.Webhooks.Secret = SecretMask
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic("settings: " + err.Error())
	}
	return b
}

// String is the Public document, so that printing or logging Settings never shows the secret.
func (s Settings) String() string { return string(s.Public()) }

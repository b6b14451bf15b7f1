package regclient

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/iplist"
)

// IPList downloads the server's IP address list (GET /v1/iplist.zip) and verifies it with
// operatorKey, the operator_key the caller pinned when it registered (never one fetched along with
// the list), and expiry against the local clock. A server without a list answers an *APIError with
// Code regtypes.CodeNoIPList. A list that does not verify is an error wrapping one of the iplist
// errors: iplist.ErrSignature (altered), iplist.ErrWrongKey (another operator), iplist.ErrExpired,
// iplist.ErrMalformed, iplist.ErrMissingFile or iplist.ErrTooLarge (also for an answer over
// iplist.MaxSize bytes, which is not read further). A list that is valid but not yet effective is
// returned; see iplist.List.Effective.
func (c *Client) IPList(ctx context.Context, operatorKey ed25519.PublicKey) (iplist.List, error) {
	if len(operatorKey) != ed25519.PublicKeySize {
		return iplist.List{}, errors.New("regclient: no operator key to verify the IP address list with: pin operator_key from /v1/config (or the registration answer) first")
	}
	base, err := url.Parse(c.BaseURL)
	switch {
	case c.BaseURL == "":
		return iplist.List{}, errors.New("regclient: no server URL configured (e.g. https://chat.example.com)")
	case err != nil:
		return iplist.List{}, fmt.Errorf("regclient: server URL %q is not a URL: %w", c.BaseURL, unwrapURLError(err))
	case base.Scheme != "https":
		return iplist.List{}, fmt.Errorf("regclient: server URL %q must start with https:// (the IP list is only fetched over HTTPS)", c.BaseURL)
	case base.Host == "":
		return iplist.List{}, fmt.Errorf("regclient: server URL %q has no host", c.BaseURL)
	}
	target := strings.TrimRight(c.BaseURL, "/") + "/v1/iplist.zip"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return iplist.List{}, fmt.Errorf("regclient: GET %s: %w", target, unwrapURLError(err))
	}
	req.Header.Set("Accept", "application/zip")
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return iplist.List{}, requestError(base.Host, target, err)
	}
	defer resp.Body.Close()
	limit := int64(max(iplist.MaxSize, maxAnswer))
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return iplist.List{}, fmt.Errorf("regclient: reading the answer of %s: %w", target, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return iplist.List{}, answerError(resp, data, target)
	}
	if int64(len(data)) > iplist.MaxSize {
		return iplist.List{}, fmt.Errorf("regclient: the IP list at %s: %w: more than %d bytes", target, iplist.ErrTooLarge, iplist.MaxSize)
	}
	if ct := contentType(resp); ct != "application/zip" {
		return iplist.List{}, fmt.Errorf("regclient: %s answered %s with %s instead of a ZIP; is %s a chatd server (or is a proxy in the way)?",
			target, resp.Status, ct, c.BaseURL)
	}
	l, err := iplist.ParseZIP(data, operatorKey, time.Now())
	if err != nil {
		return iplist.List{}, fmt.Errorf("regclient: the IP list at %s: %w", target, err)
	}
	return l, nil
}

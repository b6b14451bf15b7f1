package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// REST is a JSON client of bizapi's REST API for tests: Base is its URL ("http://127.0.0.1:8080"),
// HTTP the client (nil: http.DefaultClient), Token the bearer token sent when set.
type REST struct {
	Base  string
	HTTP  *http.Client
	Token string
}

// Call does a request with in as its JSON body (nil: none); it returns the status and decodes a 2xx
// body into out (nil: discarded). A non-2xx answer is an error naming the status and the body.
func (c *REST) Call(method, path string, in, out any) (int, error) {
	return c.do(method, path, in, out, nil)
}

// CallBasic is Call with HTTP basic authentication instead of the token (POST /v1/users/login).
func (c *REST) CallBasic(user, password, method, path string, in, out any) (int, error) {
	return c.do(method, path, in, out, func(r *http.Request) { r.SetBasicAuth(user, password) })
}

func (c *REST) do(method, path string, in, out any, auth func(*http.Request)) (int, error) {
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.Base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	switch {
	case auth != nil:
		auth(req)
	case c.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil && len(raw) > 0 {
		return resp.StatusCode, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

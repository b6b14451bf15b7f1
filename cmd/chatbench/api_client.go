package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The POST /v1/messages load generators of "chatbench api". Both send the same request
// (POST /v1/messages, JSON body {"to","type":"text","text":{"body"}}, bearer token) over keep-alive
// connections and check each answer: 201 with {"messages":[{"id":…}]}, whose id they return.
//
//   - rawPoster ("--client raw", the default): one TCP connection per worker, the request written as
//     prepared bytes, the response parsed by hand (status line, Content-Length, body) into a reused
//     buffer: about what wrk does, and cheap enough that the server gets most of the CPU.
//   - goPoster ("--client go"): net/http's Client with a Transport tuned for it (one idle connection
//     per worker kept, no compression), the header and body buffers reused per worker. It costs
//     more CPU per request: two goroutines per connection and channel hand-offs inside Transport.
type poster interface {
	post(ctx context.Context, text []byte) (id []byte, err error)
	close()
}

// sendBody appends the JSON body of a text message to the customer.
func sendBody(b []byte, text []byte) []byte {
	b = append(b, `{"to":"`+apiCustPhone+`","type":"text","text":{"body":"`...)
	b = append(b, text...) // plain ASCII ("load 123"): nothing to escape
	return append(b, `"}}`...)
}

// messageID finds the id in a {"messages":[{"id":"…"}]} answer.
func messageID(body []byte) ([]byte, error) {
	const key = `"id":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return nil, fmt.Errorf("answer without a message id: %.200s", body)
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 {
		return nil, fmt.Errorf("answer without a message id: %.200s", body)
	}
	return rest[:j], nil
}

// rawPoster speaks HTTP/1.1 on one keep-alive connection (reconnecting when it closes).
type rawPoster struct {
	addr   string // host:port
	prefix []byte // request line and headers up to "Content-Length: "
	conn   net.Conn
	br     *bufio.Reader
	req    []byte // reused request buffer
	body   []byte // reused response body buffer
}

func newRawPoster(base, token string) (*rawPoster, error) {
	const scheme = "http://"
	if len(base) <= len(scheme) || base[:len(scheme)] != scheme {
		return nil, fmt.Errorf("raw client: %q is not an http:// URL", base)
	}
	addr := base[len(scheme):]
	p := &rawPoster{addr: addr}
	p.prefix = fmt.Appendf(nil, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nUser-Agent: chatbench\r\n"+
		"Authorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: ", addr, token)
	return p, nil
}

func (p *rawPoster) dial(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return err
	}
	p.conn = c
	if p.br == nil {
		p.br = bufio.NewReaderSize(c, 4096)
	} else {
		p.br.Reset(c)
	}
	return nil
}

func (p *rawPoster) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// post sends one message; a connection that the server closed in between is opened again once.
func (p *rawPoster) post(ctx context.Context, text []byte) ([]byte, error) {
	mark := len(p.prefix)
	p.req = append(p.req[:0], p.prefix...)
	p.req = append(p.req, "00000\r\n\r\n"...) // Content-Length, filled in below
	p.req = sendBody(p.req, text)
	n := len(p.req) - mark - len("00000\r\n\r\n")
	if n > 99999 {
		return nil, errors.New("raw client: body too long")
	}
	for i, d := 0, 10000; i < 5; i, d = i+1, d/10 {
		p.req[mark+i] = byte('0' + n/d%10)
	}
	for attempt := 0; ; attempt++ {
		fresh := p.conn == nil
		if fresh {
			if err := p.dial(ctx); err != nil {
				return nil, err
			}
		}
		id, retry, err := p.roundTrip()
		if err == nil {
			return id, nil
		}
		p.close()
		if !retry || fresh || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// roundTrip writes the request and reads the answer. retry is true when nothing of an answer arrived
// (a keep-alive connection closed by the server: the request can go again on a new one).
func (p *rawPoster) roundTrip() (id []byte, retry bool, err error) {
	p.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := p.conn.Write(p.req); err != nil {
		return nil, true, err
	}
	line, err := p.br.ReadSlice('\n')
	if err != nil {
		return nil, len(line) == 0, err
	}
	// "HTTP/1.1 201 Created\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return nil, false, fmt.Errorf("raw client: bad status line %q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return nil, false, fmt.Errorf("raw client: bad status line %q", line)
	}
	length, closing := -1, false
	for {
		h, err := p.br.ReadSlice('\n')
		if err != nil {
			return nil, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return nil, false, fmt.Errorf("raw client: bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			return nil, false, fmt.Errorf("raw client: unexpected Transfer-Encoding %q", v)
		case bytes.EqualFold(k, []byte("Connection")):
			closing = bytes.EqualFold(v, []byte("close"))
		}
	}
	if length < 0 {
		return nil, false, errors.New("raw client: answer without Content-Length")
	}
	if cap(p.body) < length {
		p.body = make([]byte, length)
	}
	p.body = p.body[:length]
	if _, err := io.ReadFull(p.br, p.body); err != nil {
		return nil, false, err
	}
	if closing {
		p.close()
	}
	if code != http.StatusCreated {
		return nil, false, fmt.Errorf("POST /v1/messages: %d %s", code, bytes.TrimSpace(p.body))
	}
	id, err = messageID(p.body)
	return id, false, err
}

// goPoster posts with net/http, reusing its request header, body and answer buffers.
type goPoster struct {
	hc     *http.Client
	url    string
	header http.Header
	req    []byte
	rd     bytes.Reader
	body   bytes.Buffer
}

// newAPITransport is the Transport of the Go client: at least conns idle connections to bizapi
// kept (one per worker), no gzip negotiation.
func newAPITransport(conns int) *http.Transport {
	return &http.Transport{
		MaxIdleConns:        max(conns, 64),
		MaxIdleConnsPerHost: max(conns, 64),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

func newGoPoster(hc *http.Client, base, token string) *goPoster {
	return &goPoster{hc: hc, url: base + "/v1/messages", header: http.Header{
		"Content-Type":  {"application/json"},
		"Authorization": {"Bearer " + token},
		"User-Agent":    {"chatbench"},
	}}
}

func (p *goPoster) close() {}

func (p *goPoster) post(ctx context.Context, text []byte) ([]byte, error) {
	p.req = sendBody(p.req[:0], text)
	p.rd.Reset(p.req)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, &p.rd)
	if err != nil {
		return nil, err
	}
	req.Header = p.header // read only by the Transport; one request at a time per poster
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	p.body.Reset()
	_, err = p.body.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("POST /v1/messages: %s %s", resp.Status, bytes.TrimSpace(p.body.Bytes()))
	}
	return messageID(p.body.Bytes())
}

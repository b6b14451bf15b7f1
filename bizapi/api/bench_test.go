package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkPostMessage measures durable sends end to end: a parallel net/http client on loopback,
// the real handler (auth from the token cache, JSON, validation, metrics) and the real SQLite store
// with group commit, every 201 sent only after its message was committed and fsynced. Client and
// server share the machine's cores, so this is a lower bound for the server alone.
//
//	go test -run '^$' -bench PostMessage -benchtime 20000x ./bizapi/api/
func BenchmarkPostMessage(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Now = time.Now; c.Logger = nil })
	e.clock.Advance(time.Since(t0)) // the token must be valid on the real clock
	tok := bearer(e.token())
	tr := &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := e.srv.URL + "/v1/messages"
	body := []byte(`{"preview_url":false,"recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"Your order 1234 has shipped and will arrive on Tuesday."}}`)

	b.SetParallelism(64) // 64 × GOMAXPROCS senders: group commit needs writers waiting together
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set("Authorization", tok)
			req.Header.Set("Content-Type", "application/json")
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusCreated {
				b.Errorf("status %d", res.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	checkStored(b, e, b.N)
}

// BenchmarkPostMessageRawClient is BenchmarkPostMessage with a minimal HTTP/1.1 client (one
// keep-alive connection per sender, a prebuilt request, the answer parsed by hand), so that less of
// the shared CPU goes to the client and the figure is closer to what the server can do.
//
//	go test -run '^$' -bench PostMessageRawClient -benchtime 20000x ./bizapi/api/
func BenchmarkPostMessageRawClient(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Now = time.Now; c.Logger = nil })
	e.clock.Advance(time.Since(t0))
	tok := bearer(e.token())
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	body := `{"preview_url":false,"recipient_type":"individual","to":"15551234567","type":"text","text":{"body":"Your order 1234 has shipped and will arrive on Tuesday."}}`
	req := []byte(fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		addr, tok, len(body), body))

	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		br := bufio.NewReaderSize(conn, 4096)
		for pb.Next() {
			if _, err := conn.Write(req); err != nil {
				b.Error(err)
				return
			}
			if err := readResponse(br, http.StatusCreated); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	checkStored(b, e, b.N)
}

// readResponse reads one HTTP/1.1 response with a Content-Length and checks its status.
func readResponse(br *bufio.Reader, want int) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < 12 || string(line[9:12]) != strconv.Itoa(want) {
		return fmt.Errorf("status line %q", line)
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && strings.EqualFold(string(line[:15]), "Content-Length:") {
			n, _ = strconv.Atoi(strings.TrimSpace(string(line[15:])))
		}
	}
	if n < 0 {
		return fmt.Errorf("no Content-Length")
	}
	_, err = br.Discard(n)
	return err
}

func checkStored(b *testing.B, e *env, n int) {
	b.Helper()
	st, err := e.st.Stats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if st.Messages < int64(n) {
		b.Fatalf("%d messages stored after %d sends", st.Messages, n)
	}
}

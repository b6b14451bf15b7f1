package netlab

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve accepts in the server host on port and echoes a greeting.
func serve(t *testing.T, l *Lab, port int) {
	ln, err := l.Server.Listen("tcp", fmt.Sprintf("%s:%d", ServerAddr, port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.WriteString(c, "hello\n"); io.Copy(io.Discard, c) }()
		}
	}()
}

func dial(l *Lab, port int, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.Client.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", ServerAddr, port))
}

func TestRouteRejectDrop(t *testing.T) {
	l := New(t)
	serve(t, l, 5222)
	c, err := dial(l, 5222, 3*time.Second)
	if err != nil {
		t.Fatalf("client cannot reach the server through the box: %v", err)
	}
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	c.Close()

	l.SetRules(Reject(5222))
	if _, err := dial(l, 5222, 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("REJECT: dial error %v, want connection refused", err)
	}
	l.SetRules(Drop(5222))
	start := time.Now()
	var ne net.Error
	if _, err := dial(l, 5222, 500*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("DROP: dial error %v after %v, want a timeout", err, time.Since(start))
	}
}

func TestTLSOnly443(t *testing.T) {
	Require(t, "nginx")
	l := New(t)
	serve(t, l, 443) // not TLS itself: what passes nginx gets the greeting
	l.TLSOnly443(fmt.Sprintf("%s:%d", ServerAddr, 443))

	// Raw bytes are cut off.
	c, err := dial(l, 443, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "CHD\x01 not tls")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("non-TLS on 443: read %q, %v; want the connection closed without data", b, err)
	}
	c.Close()

	// A TLS ClientHello is passed on (our plain server then answers with its greeting).
	c, err = dial(l, 443, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); line != "hello\n" {
		t.Fatalf("TLS on 443 was not passed on: read %q, %v", line, err)
	}
}

func TestSquidConnect443Only(t *testing.T) {
	Require(t, "squid")
	l := New(t)
	serve(t, l, 443)
	serve(t, l, 5222)
	l.Squid()
	if _, err := dial(l, 443, 500*time.Millisecond); err == nil {
		t.Fatal("the client reaches the server directly; squid should be the only way out")
	}
	connect := func(port int) (string, *bufio.Reader) {
		c, err := l.Client.DialContext(context.Background(), "tcp", fmt.Sprintf("%s:%d", BoxInAddr, SquidPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", ServerAddr, port, ServerAddr, port)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status, br
	}
	if st, _ := connect(5222); !strings.HasPrefix(st, "403") {
		t.Fatalf("CONNECT to 5222: %s, want 403", st)
	}
	st, br := connect(443)
	if !strings.HasPrefix(st, "200") {
		t.Fatalf("CONNECT to 443: %s, want 200", st)
	}
	if line, err := br.ReadString('\n'); line != "hello\n" {
		t.Fatalf("through the tunnel: %q, %v", line, err)
	}
}

// TestIdleTimeout: the box forgets an idle connection after the conntrack timeout and then drops its
// packets: the client's next write is never answered, and the server never sees it.
func TestIdleTimeout(t *testing.T) {
	l := New(t)
	l.IdleTimeout(2)
	got := make(chan string, 1)
	ln, err := l.Server.Listen("tcp", ServerAddr+":5222")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			got <- line
		}
	}()
	c, err := dial(l, 5222, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "one\n")
	if line := <-got; line != "one\n" {
		t.Fatalf("got %q", line)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(l.Box.MustRun("conntrack", "-L"), "dport=5222") {
		if time.Now().After(deadline) {
			t.Fatal("the box did not forget the idle connection")
		}
		time.Sleep(100 * time.Millisecond) // polling conntrack
	}
	io.WriteString(c, "two\n")
	select {
	case line := <-got:
		t.Fatalf("the server got %q after the box forgot the connection", line)
	case <-time.After(2 * time.Second): // the write is retransmitted and dropped meanwhile
	}
}

// TestRun: Run's TB turns Fatalf into an error, runs the cleanups last first (after a Fatalf too,
// and those a cleanup adds), and keeps going when a cleanup fails.
func TestRun(t *testing.T) {
	var order []string
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	var dir string
	err := Run(logf, func(tb TB) error {
		dir = tb.TempDir()
		tb.Cleanup(func() { order = append(order, "first") })
		tb.Cleanup(func() {
			order = append(order, "second")
			tb.Cleanup(func() { order = append(order, "added by second") })
		})
		tb.Cleanup(func() {
			order = append(order, "failing")
			tb.Fatalf("cleanup failed")
		})
		tb.Cleanup(func() { order = append(order, fmt.Sprint("failed=", tb.Failed())) })
		tb.Fatalf("boom %d", 1)
		order = append(order, "after Fatalf")
		return nil
	})
	if err == nil || err.Error() != "boom 1" {
		t.Fatalf("err %v, want boom 1", err)
	}
	want := "failed=true failing second added by second first"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "cleanup failed") {
		t.Fatalf("logged %q", logged)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("TempDir %s not removed: %v", dir, err)
	}

	if err := Run(nil, func(TB) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := Run(nil, func(TB) error { return errors.ErrUnsupported }); err != errors.ErrUnsupported {
		t.Fatalf("err %v, want f's error", err)
	}
	var failed bool
	Run(nil, func(tb TB) error {
		tb.Cleanup(func() { failed = tb.Failed() })
		return errors.ErrUnsupported
	})
	if !failed {
		t.Fatal("Failed is false in a cleanup after f returned an error")
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// output collects a process's output and lets a test wait for a line.
type output struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (o *output) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-o.lines:
			if !ok {
				t.Fatalf("quickstart ended before printing %s:\n%s", re, o.String())
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("no line matching %s within %v:\n%s", re, timeout, o.String())
		}
	}
}

// waitLines waits until a line matching each of res has been printed, in any order (webhooks of
// different kinds travel in separate requests, which may arrive in either order).
func (o *output) waitLines(t *testing.T, timeout time.Duration, res ...*regexp.Regexp) {
	t.Helper()
	deadline := time.After(timeout)
	for len(res) > 0 {
		select {
		case l, ok := <-o.lines:
			if !ok {
				t.Fatalf("quickstart ended before printing %v:\n%s", res, o.String())
			}
			res = slices.DeleteFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(l) })
		case <-deadline:
			t.Fatalf("no lines matching %v within %v:\n%s", res, timeout, o.String())
		}
	}
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// run starts the quickstart binary on free ports with data in dir.
func runQuickstart(t *testing.T, bin, dir, api string) (*exec.Cmd, *output) {
	t.Helper()
	cmd := exec.Command(bin, "--data", dir, "--api", api, "--chat", freeAddr(t), "--https", freeAddr(t))
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	out := &output{lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.mu.Lock()
			out.buf.WriteString(sc.Text() + "\n")
			out.mu.Unlock()
			out.lines <- sc.Text()
		}
		close(out.lines)
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); pw.Close() }()
	return cmd, out
}

func stop(t *testing.T, cmd *exec.Cmd, out *output) {
	t.Helper()
	cmd.Process.Signal(os.Interrupt)
	out.waitLine(t, regexp.MustCompile(`^stopping`), 10*time.Second)
	for range out.lines { // until the process closed its output
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		t.Errorf("quickstart did not exit cleanly: %v\n%s", cmd.ProcessState, out.String())
	}
}

// TestQuickstart runs the quickstart as a new user would: start it, use the printed token to send a
// message with the printed API, see the customer's echo and the webhooks, stop it with Ctrl-C, start
// it again on the same data folder.
func TestQuickstart(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	for run := 1; run <= 2; run++ {
		api := freeAddr(t)
		cmd, out := runQuickstart(t, bin, dir, api)
		token := out.waitLine(t, regexp.MustCompile(`^\s+([A-Za-z0-9_-]{40,})$`), 60*time.Second)[1]
		out.waitLine(t, regexp.MustCompile(`Press Ctrl-C`), 10*time.Second)

		text := "hello, run " + strconv.Itoa(run)
		req, _ := http.NewRequest("POST", "http://"+api+"/v1/messages",
			strings.NewReader(`{"to":"15550000002","type":"text","text":{"body":"`+text+`"}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Messages []struct{ ID string } `json:"messages"`
		}
		json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if resp.StatusCode != 201 || len(res.Messages) != 1 {
			t.Fatalf("POST /v1/messages: %s", resp.Status)
		}
		id := regexp.QuoteMeta(res.Messages[0].ID)
		out.waitLine(t, regexp.MustCompile(`customer got from \+15550000001: "`+text+`"`), 10*time.Second)
		out.waitLines(t, 10*time.Second,
			regexp.MustCompile(`webhook .*status (sent|delivered|read) +`+id),
			regexp.MustCompile(`webhook .*message from \+15550000002: "echo: `+text+`"`))
		stop(t, cmd, out)
	}
}

// bizapi puts several statuses in one webhook request under load: each gets a line of its own.
func TestDescribeWebhookOneLinePerStatus(t *testing.T) {
	got := describeWebhook([]byte(`{"statuses":[{"id":"gBEGa","status":"delivered","recipient_id":"15550000002"},` +
		`{"id":"gBEGa","status":"read","recipient_id":"15550000002"}]}`))
	want := []string{"status delivered gBEGa → +15550000002", "status read      gBEGa → +15550000002"}
	if !slices.Equal(got, want) {
		t.Fatalf("describeWebhook = %q, want %q", got, want)
	}
}

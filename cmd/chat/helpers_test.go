package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/regapi"
)

// Numbers used by the tests.
const (
	alice = "+15550000001"
	bob   = "+15550000002"
)

// waitTimeout bounds every wait for a condition.
const waitTimeout = 20 * time.Second

// testNode is a dev-mode chatd on loopback ports.
type testNode struct {
	*node.Node
	dir string
}

func startNode(t *testing.T, mod ...func(*node.Config)) *testNode {
	t.Helper()
	dir := t.TempDir()
	cfg := node.Config{
		DataDir:     dir,
		Dev:         true,
		ChatListen:  "127.0.0.1:0",
		HTTPSListen: "127.0.0.1:0",
		AdminListen: "off",
		Logger:      slog.New(slog.DiscardHandler),
	}
	for _, m := range mod {
		m(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, dir: dir}
	t.Cleanup(func() { tn.stop(t) })
	return tn
}

func (n *testNode) stop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("node shutdown: %v", err)
	}
}

// code reads the last verification code the dev node sent to phone.
func (n *testNode) code(t *testing.T, phone string) string {
	t.Helper()
	b, err := os.ReadFile(regapi.DevCodeFile(n.dir, strings.TrimPrefix(phone, "+")))
	if err != nil {
		t.Fatalf("no code for %s: %v", phone, err)
	}
	return string(b)
}

// buffer is a goroutine-safe output sink that can be waited on.
type buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newBuffer() *buffer { return &buffer{changed: make(chan struct{})} }

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until the output contains want.
func (b *buffer) waitFor(t *testing.T, what, want string) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		ok, ch := strings.Contains(b.b.String(), want), b.changed
		b.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: %q did not appear within %v; output so far:\n%s", what, want, waitTimeout, b.String())
		}
	}
}

// testEnv returns the environment of a chat run: HOME is a temporary folder, so that no test
// touches a real profile.
func testEnv(t *testing.T) func(string) string {
	home := t.TempDir()
	return func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}
}

// result is a finished chat run.
type result struct {
	stdout, stderr string
	code           int
}

// chat runs the chat command in-process.
func chat(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	p := startChat(t, stdin, args...)
	return p.wait(t)
}

// proc is a chat command running in-process.
type proc struct {
	args        []string
	out, errOut *buffer
	cancel      context.CancelFunc
	done        chan int
}

func startChat(t *testing.T, stdin io.Reader, args ...string) *proc {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{args: args, out: newBuffer(), errOut: newBuffer(), cancel: cancel, done: make(chan int, 1)}
	a := &app{stdin: stdin, stdout: p.out, stderr: p.errOut, getenv: testEnv(t)}
	go func() { p.done <- a.run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(waitTimeout):
			t.Errorf("chat %v did not stop", args)
		}
	})
	return p
}

// interrupt is Ctrl-C.
func (p *proc) interrupt() { p.cancel() }

func (p *proc) wait(t *testing.T) result {
	t.Helper()
	select {
	case code := <-p.done:
		p.done <- code
		return result{p.out.String(), p.errOut.String(), code}
	case <-time.After(waitTimeout):
		t.Fatalf("chat %v did not finish within %v; stdout:\n%s\nstderr:\n%s", p.args, waitTimeout, p.out, p.errOut)
	}
	return result{}
}

// mustSucceed fails the test unless r is a success.
func (r result) mustSucceed(t *testing.T, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// mustFail checks that r failed with code and that stderr is one line containing every want.
func (r result) mustFail(t *testing.T, what string, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, code, r.stdout, r.stderr)
		return
	}
	if n := strings.Count(strings.TrimSuffix(r.stderr, "\n"), "\n"); n != 0 {
		t.Errorf("%s: the error is %d lines, want 1:\n%s", what, n+1, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%s: stderr %q does not contain %q", what, r.stderr, w)
		}
	}
}

// register registers phone in a new profile in-process and returns the profile folder.
func register(t *testing.T, n *testNode, phone string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "profile")
	chat(t, nil, "--profile", dir, "register", "--server", n.HTTPSURL, "--ca", n.CAFile, "--phone", phone).mustSucceed(t, "register "+phone)
	chat(t, nil, "--profile", dir, "register", "--code", n.code(t, phone)).mustSucceed(t, "verify "+phone)
	return dir
}

var (
	buildOnce sync.Once
	buildDir  string
	chatBin   string
	buildErr  error
)

// TestMain removes the built binary.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary builds the chat command once per test run and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = err
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "chat-test-bin"); buildErr != nil {
			return
		}
		chatBin = filepath.Join(buildDir, "chat")
		out, err := exec.Command(goTool, "build", "-o", chatBin, ".").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, out}
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return chatBin
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + string(e.out) }

// execProc is the chat binary running as a child process.
type execProc struct {
	cmd         *exec.Cmd
	out, errOut *buffer
	done        chan struct{}
	err         error
}

func startBinary(t *testing.T, stdin io.Reader, args ...string) *execProc {
	t.Helper()
	p := &execProc{out: newBuffer(), errOut: newBuffer(), done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdin, p.out, p.errOut
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *execProc) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		t.Fatalf("chat %v did not finish within %v; stdout:\n%s\nstderr:\n%s", p.cmd.Args[1:], waitTimeout, p.out, p.errOut)
	}
	return result{p.out.String(), p.errOut.String(), p.cmd.ProcessState.ExitCode()}
}

func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	return startBinary(t, nil, args...).wait(t)
}

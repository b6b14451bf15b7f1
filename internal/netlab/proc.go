package netlab

import (
	"context"
	"strings"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/internal/testutil"
)

// Proc is a program running in a host. Its output is kept for failure messages.
type Proc struct {
	t    TB
	Host *Host
	Args []string
	pid  int
	out  *testutil.Buffer
	done chan struct{}
}

// Start starts name in h; the test's cleanup stops it (SIGTERM, then SIGKILL).
func (h *Host) Start(name string, args ...string) *Proc {
	h.t.Helper()
	p := &Proc{t: h.t, Host: h, Args: append([]string{name}, args...), out: new(testutil.Buffer), done: make(chan struct{})}
	cmd := h.Command(name, args...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Killed with the test process, also when a timeout ends it without cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("%v", err)
	}
	p.pid = cmd.Process.Pid
	go func() { cmd.Wait(); close(p.done) }()
	h.t.Cleanup(p.Stop)
	return p
}

// Output returns what the program printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the program ended.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Kill sends SIGKILL and waits for the end.
func (p *Proc) Kill() {
	syscall.Kill(p.pid, syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM, and SIGKILL after 10 s.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Logf("%s did not stop on SIGTERM; killing it", p.Args[0])
		p.Kill()
	}
}

// WaitListening waits until something in h accepts TCP on addr, or fails the test when timeout
// passes or p exits first.
func (h *Host) WaitListening(p *Proc, addr string, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := h.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			h.t.Fatalf("%s exited before listening on %s:\n%s", p.Args[0], addr, p.Output())
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s not listening on %s after %v: %v\n%s", p.Args[0], addr, timeout, err, p.Output())
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process
	}
}

// Tail returns the last lines of s (a Proc's Output, a log) for failure messages.
func Tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

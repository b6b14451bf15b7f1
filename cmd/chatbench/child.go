package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/chatd-dev/chatd/server/node"
)

// startChild runs this binary's hidden subcommand args[0] (serve-node, serve-api) with args[1:] as a
// child process and decodes the JSON line it prints when it is ready into info. stop ends it
// (SIGTERM, then SIGKILL after a minute) and waits for it; on an error the child is already stopped.
func startChild(ctx context.Context, c *common, info any, args ...string) (pid int, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	if c.verbose {
		args = append(args, "-v")
	}
	name := "the " + args[0] + " child process"
	cmd := exec.Command(exe, args...)
	cmd.Stderr = c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, out)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			err = fmt.Errorf("%s exited before it was ready", name)
		} else if jerr := json.Unmarshal([]byte(l), info); jerr != nil {
			err = fmt.Errorf("%s said %q: %v", name, l, jerr)
		}
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("%s did not start within 60 s", name)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		stop()
		return 0, nil, err
	}
	return cmd.Process.Pid, stop, nil
}

var errNoServerKey = errors.New("no 32-byte server key")

// childProfiler is a child process's CPU profile, switched by its parent over the control port.
type childProfiler struct {
	mu   sync.Mutex
	stop func()
}

// serveSet answers a control request for set(file): true, or the error.
func (p *childProfiler) serveSet(w http.ResponseWriter, file string) {
	if err := p.set(file); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(true)
}

// set starts a CPU profile into file, after ending the running one; "" or "stop" only ends it.
func (p *childProfiler) set(file string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
	if file == "" || file == "stop" {
		return nil
	}
	pc := common{cpuProfile: file}
	stop, err := pc.startProfile()
	if err != nil {
		return err
	}
	p.stop = stop
	return nil
}

// runChild is the common part of a child process (serve-node, serve-api) once its servers run: it
// serves mux on a loopback control port, prints the ready line info(control address) as JSON, and
// waits for SIGTERM (ctx) or the end of n; then it closes the control port and ends prof's profile.
// The caller shuts its servers down.
func runChild(ctx context.Context, stdout io.Writer, n *node.Node, mux *http.ServeMux, prof *childProfiler,
	info func(control string) any) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b, err := json.Marshal(info(ln.Addr().String()))
	if err != nil {
		srv.Close()
		return err
	}
	fmt.Fprintln(stdout, string(b))
	select {
	case <-ctx.Done():
	case <-n.Done():
	}
	srv.Close()
	return prof.set("")
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
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

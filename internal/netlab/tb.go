package netlab

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// TB is what the lab needs of its caller: *testing.T and *testing.B satisfy it, and Run provides one
// for commands (chatbench recover). Fatalf and Skipf end the caller's goroutine (they never return);
// like their testing counterparts they must be called from the goroutine running the test or Run's f.
// Failed is for cleanups that add logs to a failure.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Logf(format string, args ...any)
	TempDir() string
	Failed() bool
}

// Run calls f with a TB for use outside tests and returns f's error, or the message of a Fatalf or
// Skipf as an error (they panic with a private value that Run recovers; any other panic goes on after
// the cleanups). The functions given to Cleanup run when f ends, last first, also after a Fatalf.
// Failed is true after a Fatalf or Skipf or once f returned an error. Logf writes a line to logf (nil:
// discarded); TempDir makes a folder that a cleanup removes.
func Run(logf func(format string, args ...any), f func(t TB) error) (err error) {
	r := &runner{logf: logf}
	defer r.cleanup()
	defer func() {
		if v := recover(); v != nil {
			s, ok := v.(stop)
			if !ok {
				panic(v)
			}
			err = s.err
		}
	}()
	if err := f(r); err != nil {
		r.mu.Lock()
		r.failed = true // for the cleanups' logs, as after a Fatalf
		r.mu.Unlock()
		return err
	}
	return nil
}

// stop is the panic value of Fatalf and Skipf.
type stop struct{ err error }

type runner struct {
	logf     func(format string, args ...any)
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (r *runner) Helper() {}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	panic(stop{errors.New(strings.TrimSpace(fmt.Sprintf(format, args...)))})
}

// Skipf is Fatalf: a command that cannot do its job has failed.
func (r *runner) Skipf(format string, args ...any) { r.Fatalf(format, args...) }

func (r *runner) Logf(format string, args ...any) {
	if r.logf != nil {
		r.logf(format, args...)
	}
}

func (r *runner) TempDir() string {
	dir, err := os.MkdirTemp("", "netlab-")
	if err != nil {
		r.Fatalf("%v", err)
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (r *runner) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// cleanup runs the cleanups, last first, including any they add. A Fatalf in one is logged and the
// rest still run.
func (r *runner) cleanup() {
	for {
		r.mu.Lock()
		n := len(r.cleanups)
		if n == 0 {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[n-1]
		r.cleanups = r.cleanups[:n-1]
		r.mu.Unlock()
		func() {
			defer func() {
				if v := recover(); v != nil {
					s, ok := v.(stop)
					if !ok {
						panic(v)
					}
					r.Logf("cleanup: %v", s.err)
				}
			}()
			f()
		}()
	}
}

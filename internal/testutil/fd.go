// Package testutil holds helpers that tests in several packages share. Only tests import it.
package testutil

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
)

// AcceptWatcher passes Accept through and reports its errors on Errs (without blocking).
type AcceptWatcher struct {
	net.Listener
	Errs chan error
}

func (l *AcceptWatcher) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		select {
		case l.Errs <- err:
		default:
		}
	}
	return c, err
}

// ExhaustFDs lowers the soft RLIMIT_NOFILE to the descriptors open now plus a few and opens /dev/null
// until the limit is reached, then frees one: the next descriptor anyone opens is the last one.
// release closes the files and restores the limit; it is also registered as a cleanup.
func ExhaustFDs(t testing.TB) (release func()) {
	t.Helper()
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := saved
	lim.Cur = uint64(len(open) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, f := range files {
				f.Close()
			}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved)
		})
	}
	t.Cleanup(release)
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatalf("filling the descriptor table: %v", err)
			}
			break
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		t.Fatal("no descriptor could be opened under the lowered limit")
	}
	files[len(files)-1].Close()
	files = files[:len(files)-1]
	return release
}

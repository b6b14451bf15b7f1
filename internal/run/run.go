// Package run runs the long-lived parts of a daemon (listeners, loops) and reports the first that
// fails, so that the daemon can shut down.
package run

import (
	"fmt"
	"sync"
)

// Group runs functions in goroutines. The first to return an error closes Done; Err then says which
// part failed and why. A part that returns nil ends quietly. The zero Group is ready to use; it must
// not be copied after first use.
type Group struct {
	// Prefix, if not empty, starts every error: "Prefix: name: err". Set it before the first Go.
	Prefix string

	wg   sync.WaitGroup
	mu   sync.Mutex
	done chan struct{} // guarded by mu; made on first use, closed when err is set
	err  error         // guarded by mu
}

// Go runs fn in a goroutine. If fn fails, its error, wrapped as "name: err" (after Prefix), becomes
// Err unless another part failed first.
func (g *Group) Go(name string, fn func() error) {
	if g.Prefix != "" {
		name = g.Prefix + ": " + name
	}
	g.wg.Go(func() {
		if err := fn(); err != nil {
			g.fail(fmt.Errorf("%s: %w", name, err))
		}
	})
}

func (g *Group) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
		close(g.doneLocked())
	}
}

func (g *Group) doneLocked() chan struct{} {
	if g.done == nil {
		g.done = make(chan struct{})
	}
	return g.done
}

// Done is closed when a part failed; Err then says why.
func (g *Group) Done() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.doneLocked()
}

// Err is the failure that closed Done, or nil.
func (g *Group) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Wait waits until every function started with Go has returned. Stop them first (cancel their
// context, close their listeners).
func (g *Group) Wait() { g.wg.Wait() }

package cliutil

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// ShutdownTimeout is how long WaitAndShutdown gives a daemon to stop.
const ShutdownTimeout = 10 * time.Second

// Daemon is a started server (bizapi.Daemon, node.Node).
type Daemon interface {
	// Done is closed when a part of the daemon failed; Err then says why.
	Done() <-chan struct{}
	Err() error
	Shutdown(context.Context) error
}

// WaitAndShutdown waits until ctx is done (a signal) or d fails, logging failed with the error in
// the latter case, and then shuts d down within ShutdownTimeout. It returns the shutdown's error,
// else d's failure (nil after a clean stop).
func WaitAndShutdown(ctx context.Context, d Daemon, log *slog.Logger, failed string) error {
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-d.Done():
		log.Error(failed, "err", d.Err())
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := d.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return d.Err()
}

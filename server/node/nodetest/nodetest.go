// Package nodetest starts complete chatd nodes for tests, as net/http/httptest does servers.
package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/server/node"
)

// Start starts a dev-mode node for the test and shuts it down when the test ends (a failed shutdown
// fails the test). Empty fields of cfg get test values: a temporary data folder, the chat and HTTPS
// listeners on loopback ports chosen by the kernel, and no admin listener ("127.0.0.1:0" asks for one).
func Start(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	cfg.Dev = true
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.ChatListen == "" {
		cfg.ChatListen = "127.0.0.1:0"
	}
	if cfg.HTTPSListen == "" {
		cfg.HTTPSListen = "127.0.0.1:0"
	}
	if cfg.AdminListen == "" {
		cfg.AdminListen = "off"
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("chatd node shutdown: %v", err)
		}
	})
	return n
}

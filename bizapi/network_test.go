package bizapi

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/bizapi/gateway"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/node/nodetest"
	"github.com/chatd-dev/chatd/server/regapi"
)

// NetcheckConfig takes the server static key and the operator key that a registration pinned from
// the database: nothing before the first start, both next to a running bizapi and after it stopped.
func TestNetcheckConfigPinnedKeys(t *testing.T) {
	chatdData := t.TempDir()
	n := nodetest.Start(t, node.Config{DataDir: chatdData, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{DataDir: filepath.Join(t.TempDir(), "data"), ServerURL: n.HTTPSURL, ServerCAFile: n.CAFile,
		Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}

	nc, err := NetcheckConfig(ctx, cfg)
	if err != nil || nc.ServerURL != n.HTTPSURL || nc.RootCAs == nil || nc.ServerKey != [32]byte{} || nc.OperatorKey != nil {
		t.Fatalf("before the first start: %+v, %v", nc, err)
	}

	d, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(ctx)
	const phone = "15550500001"
	if _, err := d.Gateway.Register(ctx, gateway.RegisterRequest{CC: "1", PhoneNumber: phone[1:], Method: "sms"}); err != nil {
		t.Fatal(err)
	}
	// A code was requested, nothing is registered yet: no pinned keys.
	if nc, err := NetcheckConfig(ctx, cfg); err != nil || nc.ServerKey != [32]byte{} || nc.OperatorKey != nil {
		t.Fatalf("before verify: %+v, %v", nc, err)
	}
	code, err := os.ReadFile(regapi.DevCodeFile(chatdData, phone))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Gateway.Verify(ctx, strings.TrimSpace(string(code))); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		nc, err := NetcheckConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if nc.ServerKey != n.ServerKey || !nc.OperatorKey.Equal(n.OperatorKey) || nc.ServerURL != n.HTTPSURL {
			t.Fatalf("%s: server key %x, operator key %x; want chatd's %x and %x", when, nc.ServerKey, nc.OperatorKey,
				n.ServerKey, n.OperatorKey)
		}
	}
	check("next to the running bizapi")
	if err := d.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	check("after bizapi stopped")
}

package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/chatd-dev/chatd/bizapi"
	"github.com/chatd-dev/chatd/server/node"
	"github.com/chatd-dev/chatd/server/store"
)

// apiServers are chatd and bizapi as "chatbench api" uses them: in this process (--spawn) or in a
// child process (--spawn-process, the hidden serve-api subcommand).
type apiServers struct {
	api       string   // bizapi's REST API, http://host:port
	chat      string   // chatd's raw chat listener
	serverKey [32]byte // chatd's static key
	chatdData string   // chatd's data folder (operator key, dev codes)
	pid       int      // the child process, or 0 when in this process
	control   string   // the child's control URL, or ""
	cleanup   []func()
}

func (s *apiServers) close() {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

// serveAPIInfo is the first line the serve-api child prints.
type serveAPIInfo struct {
	API, Chat, Control string
	ServerKey          []byte
}

// startAPIServers starts chatd (dev mode, loopback) and bizapi (webhooks to hookURL) on dir, and
// registers the customer's device key with chatd.
func startAPIServers(ctx context.Context, c *common, dir, hookURL string, custPub [32]byte, child bool) (*apiServers, error) {
	chatdData := filepath.Join(dir, "chatd")
	if child {
		return startAPIChild(ctx, c, dir, hookURL, custPub)
	}
	s := &apiServers{chatdData: chatdData}
	n, d, err := runAPIServers(ctx, c, dir, hookURL, custPub)
	if err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(sctx)
	}, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Shutdown(sctx)
	})
	s.api, s.chat, s.serverKey = "http://"+d.Addr.String(), n.ChatAddr.String(), n.ServerKey
	return s, nil
}

// runAPIServers starts chatd and then bizapi; the caller shuts down bizapi first, then chatd.
func runAPIServers(ctx context.Context, c *common, dir, hookURL string, custPub [32]byte) (*node.Node, *bizapi.Daemon, error) {
	chatdData := filepath.Join(dir, "chatd")
	n, err := node.Start(node.Config{DataDir: chatdData, Dev: true, ChatListen: "127.0.0.1:0", HTTPSListen: "127.0.0.1:0",
		AdminListen: "off", Logger: c.logger()})
	if err != nil {
		return nil, nil, err
	}
	if _, err := n.Store.RegisterDevice(ctx, store.Account{Phone: apiCustPhone, DevicePub: custPub[:]}); err != nil {
		shutdownNode(n)
		return nil, nil, err
	}
	d, err := bizapi.Start(bizapi.Config{
		DataDir: filepath.Join(dir, "bizapi"), Listen: "127.0.0.1:0",
		ServerURL: n.HTTPSURL, ServerCAFile: n.CAFile, WebhookURL: hookURL,
		Logger: c.logger(), Version: "chatbench",
	})
	if err != nil {
		shutdownNode(n)
		return nil, nil, fmt.Errorf("starting bizapi: %w", err)
	}
	return n, d, nil
}

func shutdownNode(n *node.Node) {
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Shutdown(sctx)
}

// startAPIChild runs "chatbench serve-api" and waits for its addresses.
func startAPIChild(ctx context.Context, c *common, dir, hookURL string, custPub [32]byte) (*apiServers, error) {
	var info serveAPIInfo
	pid, stop, err := startChild(ctx, c, &info, "serve-api", "--data", dir, "--webhook", hookURL,
		"--customer-key", base64.StdEncoding.EncodeToString(custPub[:]))
	if err != nil {
		return nil, err
	}
	s := &apiServers{chatdData: filepath.Join(dir, "chatd"), pid: pid, cleanup: []func(){stop}}
	if len(info.ServerKey) != 32 {
		s.close()
		return nil, fmt.Errorf("the serve-api child process: %w", errNoServerKey)
	}
	s.api, s.chat, s.control = "http://"+info.API, info.Chat, "http://"+info.Control
	copy(s.serverKey[:], info.ServerKey)
	return s, nil
}

// profile starts (file != "") or stops the child's CPU profile.
func (s *apiServers) profile(file string) error {
	if s.control == "" {
		return nil
	}
	if file == "" {
		file = "stop"
	}
	var ok bool
	return getJSON(s.control+"/profile?cpuprofile="+file, &ok)
}

// cmdServeAPI is the child of "api --spawn-process": chatd (dev mode, loopback) and bizapi in one
// process, the customer's device registered, and a control port whose /profile?cpuprofile=FILE
// starts a CPU profile (FILE "stop" ends it). It prints one JSON line with the addresses and runs
// until SIGTERM.
func cmdServeAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, fs := newFlagSet("serve-api", "Usage: chatbench serve-api --data DIR --webhook URL --customer-key B64 (internal: the child of api --spawn-process)\n", stderr)
	dir := fs.String("data", "", "data folder")
	hook := fs.String("webhook", "", "webhook URL")
	custKey := fs.String("customer-key", "", "the customer's device public key, base64")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	k, err := base64.StdEncoding.DecodeString(*custKey)
	if err != nil || len(k) != 32 || *dir == "" || *hook == "" {
		return errors.New("serve-api needs --data, --webhook and --customer-key (32 bytes, base64)")
	}
	var pub [32]byte
	copy(pub[:], k)
	n, d, err := runAPIServers(ctx, c, *dir, *hook, pub)
	if err != nil {
		return err
	}
	var prof childProfiler
	mux := http.NewServeMux()
	mux.HandleFunc("/profile", func(w http.ResponseWriter, r *http.Request) {
		prof.serveSet(w, r.URL.Query().Get("cpuprofile"))
	})
	err = runChild(ctx, stdout, n, mux, &prof, func(control string) any {
		return serveAPIInfo{API: d.Addr.String(), Chat: n.ChatAddr.String(), Control: control, ServerKey: n.ServerKey[:]}
	})
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return errors.Join(err, d.Shutdown(sctx), n.Shutdown(sctx))
}

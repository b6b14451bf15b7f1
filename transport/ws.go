package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// wsConn is a chat stream in binary WebSocket messages (websocket.NetConn) with the real addresses of
// the connection underneath, closed without the WebSocket close handshake: the chat protocol has its
// own Close, and a handshake with a dead peer would block the closer for seconds.
//
// An expired deadline closes the whole WebSocket (a property of websocket.NetConn); the error it
// returns is made to wrap os.ErrDeadlineExceeded, as a net.Conn's would, so that callers classify it
// as a timeout.
type wsConn struct {
	net.Conn // websocket.NetConn
	ws       *websocket.Conn
	local    net.Addr
	remote   net.Addr

	readDeadline, writeDeadline atomic.Int64 // UnixNano, 0 for none
}

func newWSConn(nc net.Conn, ws *websocket.Conn, local, remote net.Addr) *wsConn {
	return &wsConn{Conn: nc, ws: ws, local: local, remote: remote}
}

func (c *wsConn) LocalAddr() net.Addr  { return c.local }
func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

func (c *wsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, c.timeout(err, &c.readDeadline)
}

func (c *wsConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	return n, c.timeout(err, &c.writeDeadline)
}

func (c *wsConn) timeout(err error, deadline *atomic.Int64) error {
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if d := deadline.Load(); d != 0 && time.Now().UnixNano() >= d {
		return fmt.Errorf("%w (%w)", os.ErrDeadlineExceeded, err)
	}
	return err
}

func (c *wsConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *wsConn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Store(unixNano(t))
	return c.Conn.SetReadDeadline(t)
}

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(unixNano(t))
	return c.Conn.SetWriteDeadline(t)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (c *wsConn) Close() error {
	c.Conn.SetDeadline(time.Time{}) // stop NetConn's deadline timers
	err := c.ws.CloseNow()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// WebSocket returns the handler of chat streams over WebSocket (GET /v1/chat with Upgrade:
// websocket on the HTTPS API): each upgraded connection is handed to the Chat listener as a *Conn
// with transport "ws", the local port, and Accepted set to when the upgrade request arrived (the chat
// server's handshake deadline counts from it). Binary messages carry the chat byte stream; message
// boundaries mean nothing. A request without an upgrade gets 426 Upgrade Required.
func (m *Mux) WebSocket() http.Handler {
	return http.HandlerFunc(m.serveWS)
}

func (m *Mux) serveWS(w http.ResponseWriter, r *http.Request) {
	accepted := time.Now()
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "this is the chatd WebSocket endpoint: GET with Upgrade: websocket", http.StatusMethodNotAllowed)
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "this is the chatd WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)", http.StatusUpgradeRequired)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{WSSubprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request with the error.
		remote, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
		if m.Logger != nil {
			m.Logger.Debug("443: WebSocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		}
		if m.OnReject != nil {
			m.OnReject(remote, "handshake_failed", err)
		}
		return
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	port := 0
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := a.(*net.TCPAddr); ok {
			port = ta.Port
		}
	}
	m.chat.deliver(&Conn{
		Conn:      newWSConn(nc, ws, nc.LocalAddr(), nc.RemoteAddr()),
		Transport: TransportWS,
		Port:      port,
		Accepted:  accepted,
	})
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

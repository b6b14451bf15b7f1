//go:build !linux

package transport

import (
	"net"
	"time"
)

// setUserTimeout is a no-op where TCP_USER_TIMEOUT does not exist; pings still detect dead
// connections.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }

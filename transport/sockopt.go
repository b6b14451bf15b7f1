package transport

import (
	"net"
	"time"
)

// tuneTCP sets TCP keepalive (idle time, then probes every 5 s) and, where the system has it,
// TCP_USER_TIMEOUT. keepAlive 0 means 15 s, negative disables keepalive; userTimeout ≤ 0 leaves
// the system default.
func tuneTCP(c *net.TCPConn, keepAlive, userTimeout time.Duration) error {
	if keepAlive == 0 {
		keepAlive = 15 * time.Second
	}
	ka := net.KeepAliveConfig{Enable: keepAlive > 0, Idle: keepAlive, Interval: 5 * time.Second, Count: 3}
	if err := c.SetKeepAliveConfig(ka); err != nil {
		return err
	}
	if userTimeout <= 0 {
		return nil
	}
	return setUserTimeout(c, userTimeout)
}

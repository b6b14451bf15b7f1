package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/chatd-dev/chatd/noisesock"
	"github.com/chatd-dev/chatd/transport"
)

// While a connection is up, the client watches the path it is not using (Config.ReprobeInterval):
//
//   - On the 443 path while direct (5222) endpoints exist, it probes them — transport, then the
//     Noise handshake up to the server's proof of the pinned key, never a login — and when one
//     answers, it makes that endpoint the preferred one and ends the connection with errMoving. Run
//     reconnects at once; the race tries the preferred endpoint first. Requests not yet acknowledged
//     are sent again on the new connection (the server deduplicates sends) and deliveries not yet
//     acknowledged come again (the client deduplicates them), so the move loses nothing.
//   - On the direct path it checks that the 443 path still opens (transport only: TCP, TLS, the
//     WebSocket upgrade). If none of it does, the network is unsupported (N5: "5222 open, 443 closed";
//     443 is needed for HTTPS registration and restarts, and as the fallback), and Status.NetworkProblem
//     and the log say so. The first check runs at once.

// errMoving ends a connection on the 443 path because the direct path answers again.
var errMoving = errors.New("client: the direct path answers again; moving back to it")

// errProbed aborts a probe's handshake after the server proved the pinned key.
var errProbed = errors.New("client: probe done")

// watchPaths runs for the connection on ep until ctx ends (the connection ended).
func (c *Client) watchPaths(ctx context.Context, cn *conn, ep transport.Endpoint) {
	if c.cfg.ReprobeInterval < 0 {
		return
	}
	direct, via443 := c.direct, c.via443
	on443 := transport.On443(ep, c.endpoints)
	if on443 {
		c.setNetworkProblem("") // the 443 path works: whatever a check on 5222 found is stale
	}
	if on443 && len(direct) == 0 {
		return // 443-only, or nothing else configured: nothing to move to
	}
	wait := c.jitter(c.cfg.ReprobeInterval)
	if !on443 {
		// The 443 check runs at the first connection, then once per interval, however often the
		// connection is replaced in between.
		c.mu.Lock()
		if c.checked443.IsZero() {
			wait = 0
		} else {
			wait = max(0, time.Until(c.checked443.Add(wait)))
		}
		c.mu.Unlock()
	}
	if !on443 && len(via443) == 0 {
		return // no 443 path configured: nothing to check
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if on443 {
			for _, e := range direct {
				err := c.probe(ctx, e, true)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					c.log.Info("the direct path answers again; moving back to it", "endpoint", e.String(), "from", ep.String())
					c.mu.Lock()
					c.lastGood = e
					c.mu.Unlock()
					cn.close(errMoving)
					return
				}
				c.log.Debug("direct path still fails", "endpoint", e.String(), "err", err)
			}
		} else {
			c.mu.Lock()
			c.checked443 = time.Now()
			c.mu.Unlock()
			var fails []string
			for _, e := range via443 {
				err := c.probe(ctx, e, false)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					fails = nil
					break
				}
				fails = append(fails, err.Error())
			}
			if fails == nil {
				c.setNetworkProblem("")
			} else {
				c.setNetworkProblem(fmt.Sprintf("connected over %s, but the 443 path fails (%s). This network is unsupported: "+
					"chatd needs outbound TCP 443 for HTTPS (registration, restarts) and as the fallback when 5222 is blocked. "+
					"Allow outbound TCP 443 to the server (\"5222 open, 443 closed\" does not work for long)", ep, strings.Join(fails, "; ")))
			}
		}
		t.Reset(c.jitter(c.cfg.ReprobeInterval))
	}
}

// setNetworkProblem records p in the status (and logs it when it changes).
func (c *Client) setNetworkProblem(p string) {
	c.mu.Lock()
	changed := c.status.NetworkProblem != p
	c.status.NetworkProblem = p
	s := c.status
	c.mu.Unlock()
	if !changed {
		return
	}
	if p != "" {
		c.log.Warn("network unsupported", "problem", p)
	} else {
		c.log.Info("network problem resolved: the 443 path opens again")
	}
	if c.cfg.OnStatus != nil {
		c.cfg.OnStatus(s)
	}
}

// jitter returns d ± 20 %.
func (c *Client) jitter(d time.Duration) time.Duration {
	j := d / 5
	return d - j + rand.N(2*j+1)
}

// probe dials ep and, if handshake, runs the Noise handshake until the server proved the pinned key.
// It never logs in, so the connection in use is not disturbed.
func (c *Client) probe(ctx context.Context, ep transport.Endpoint, handshake bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*c.cfg.ConnectTimeout)
	defer cancel()
	tc, err := c.dialer.Dial(ctx, ep)
	if err != nil {
		return err
	}
	defer tc.Close()
	if !handshake {
		return nil
	}
	gate := &gateConn{Conn: tc, wait: func() error { return errProbed }}
	_, _, err = noisesock.Client(ctx, gate, c.noiseConfig(path(ep, false)+"+probe"))
	switch {
	case errors.Is(err, errProbed):
		return nil
	case err == nil:
		return errors.New("client: probe handshake completed unexpectedly")
	}
	return fmt.Errorf("%s: %w", ep, err)
}

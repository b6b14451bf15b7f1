package lab

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chatd-dev/chatd/client"
	"github.com/chatd-dev/chatd/internal/netlab"
)

// blackholedPair starts a lab with a peer in the server host and an account in the client host,
// checks they exchange messages, then blackholes the account's connection at the box — with quiet,
// only after the connection carried nothing for 2 s (the receipts of the exchange have settled), so
// that no data is in flight. It returns the account's reconnect count before the blackhole.
func blackholedPair(t *testing.T, peerPhone, phone string, quiet bool) (a, peer *account, before int) {
	t.Helper()
	l := netlab.New(t)
	s := startChatd(t, l)
	peer = s.newAccount(l.Server, peerPhone, nil)
	a = s.newAccount(l.Client, phone, nil)
	a.waitConnected(t, 10*time.Second)
	exchange(t, a, peer, "before")
	if quiet {
		l.WaitClientQuiet(5222, 2*time.Second, 30*time.Second)
	}
	before = a.Status().Reconnects
	l.BlackholeClient(5222)
	return a, peer, before
}

// waitReconnected waits until a is connected again after more than before reconnects.
func (a *account) waitReconnected(t *testing.T, before int) time.Duration {
	t.Helper()
	return a.waitStatus(t, 60*time.Second, "reconnected", func(s client.Status) bool {
		return s.State == client.Connected && s.Reconnects > before
	})
}

// TestBlackholeDetected is N2 with the targets of DESIGN §6: a connection that silently stops
// passing packets is replaced within 35 s when idle (TCP keepalive after 15 s idle with
// TCP_USER_TIMEOUT, and the pings), and within 10 s when a send is waiting for its acknowledgement
// (TCP_USER_TIMEOUT 7 s). The send is not lost and not duplicated.
func TestBlackholeDetected(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		a, peer, before := blackholedPair(t, "15550000051", "15550000052", true)
		took := a.waitReconnected(t, before)
		t.Logf("idle blackholed connection replaced after %v (%s: %s)", took, a.Status().LastClose, a.Status().LastError)
		if took > 35*time.Second {
			t.Errorf("idle blackhole replaced after %v, want ≤ 35 s", took)
		}
		exchange(t, a, peer, "after")
	})
	t.Run("unacked-send", func(t *testing.T) {
		t.Parallel()
		a, peer, before := blackholedPair(t, "15550000053", "15550000054", false)
		start := time.Now()
		sent := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := a.Send(ctx, peer.phone, "blackholed-send", text("sent into a blackhole"))
			sent <- err
		}()
		took := a.waitReconnected(t, before)
		t.Logf("blackholed connection with an unacknowledged send replaced after %v (%s: %s)", took, a.Status().LastClose, a.Status().LastError)
		if took > 10*time.Second {
			t.Errorf("replaced after %v, want ≤ 10 s", took)
		}
		if err := <-sent; err != nil {
			t.Fatalf("the send never completed: %v", err)
		}
		t.Logf("the send was acknowledged %v after it was made", time.Since(start))
		peer.box.waitCount(t, 2, 10*time.Second) // "before ping" and the blackholed one
		if _, dups, twice := peer.box.count(); dups != 0 || twice != 0 {
			t.Fatalf("duplicates: %d deliveries, %d bodies twice", dups, twice)
		}
	})
}

// TestIdleFirewall is N2: a stateful firewall that forgets connections idle for 60 s. With the
// default settings the connection lives on, idle, for 10 minutes (CHATD_LAB_IDLE shortens it for a
// run by hand); with pings and TCP keepalive off, the same firewall kills it (the test can fail).
func TestIdleFirewall(t *testing.T) {
	t.Parallel()
	idle := 10 * time.Minute
	if v := os.Getenv("CHATD_LAB_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHATD_LAB_IDLE: %v", err)
		}
		idle = d
	}
	l := netlab.New(t)
	l.IdleTimeout(60)
	s := startChatd(t, l)
	peer := s.newAccount(l.Server, "15550000061", nil)
	a := s.newAccount(l.Client, "15550000062", nil)
	silent := s.newAccount(l.Client, "15550000063", func(c *client.Config) {
		c.PingInterval = 10 * time.Minute // the longest the server accepts: no ping within the test
		c.TCPKeepAlive = -1
	})
	for _, x := range []*account{a, silent} {
		if st := x.waitConnected(t, 10*time.Second); st.Port != 5222 {
			t.Fatalf("%s connected on %d, want 5222", x.phone, st.Port)
		}
	}
	aPorts := l.ClientPorts(5222)

	// The silent one: the firewall forgets it after 60 s; the next send finds it dead.
	wait(t, 90*time.Second)
	if st := silent.Status(); st.Reconnects != 0 {
		t.Fatalf("the silent client reconnected on its own: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := silent.Send(ctx, peer.phone, "", text("after 90 s of silence")); err != nil {
		t.Fatal(err)
	}
	if st := silent.Status(); st.Reconnects != 1 || st.LastClose != "connection_lost" {
		t.Fatalf("without pings and keepalive the firewall should have killed the connection: reconnects %d, last close %q (%s)",
			st.Reconnects, st.LastClose, st.LastError)
	}
	t.Logf("without pings: dead after 90 s idle (%s)", silent.Status().LastError)

	// The default one lives for the whole idle period on its first connection.
	wait(t, idle-90*time.Second)
	if st := a.Status(); st.State != client.Connected || st.Reconnects != 0 {
		t.Fatalf("with default settings the connection did not survive %v idle: %+v", idle, st)
	}
	exchange(t, a, peer, fmt.Sprintf("after %v idle", idle))
	if st := a.Status(); st.Reconnects != 0 {
		t.Fatalf("the exchange after %v idle needed a new connection: %+v", idle, st)
	}
	t.Logf("with defaults: alive after %v idle behind a 60 s idle timeout (rtt %v); ports before %v after %v",
		idle, a.Status().RTT, aPorts, l.ClientPorts(5222))
}

// wait lets d pass: the idle periods are what these tests are about.
func wait(t *testing.T, d time.Duration) {
	if d > 0 {
		time.Sleep(d)
	}
}

// TestMoveBackTo5222 is N3/N4: with 5222 dropped the client runs over 443; when 5222 opens again it
// moves back within the re-probe interval (shortened here from 5 min), while messages flow both ways:
// none lost, none duplicated.
func TestMoveBackTo5222(t *testing.T) {
	t.Parallel()
	l := netlab.New(t)
	s := startChatd(t, l)
	peer := s.newAccount(l.Server, "15550000071", nil)
	l.SetRules(netlab.Drop(5222))
	const reprobe = 2 * time.Second
	a := s.newAccount(l.Client, "15550000072", func(c *client.Config) { c.ReprobeInterval = reprobe })
	if st := a.waitConnected(t, 10*time.Second); !on443(st) {
		t.Fatalf("connected over %s:%d with 5222 dropped", st.Transport, st.Port)
	}

	// Both sides send 1,000 messages, 5 ms apart, while the path changes.
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, pair := range [][2]*account{{a, peer}, {peer, a}} {
		from, to := pair[0], pair[1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var swg sync.WaitGroup
			for i := range n {
				swg.Add(1)
				go func() {
					defer swg.Done()
					if _, err := from.Send(ctx, to.phone, fmt.Sprintf("%s-%d", from.phone, i), text(fmt.Sprintf("%s #%d", from.phone, i))); err != nil {
						errs <- err
					}
				}()
				time.Sleep(5 * time.Millisecond) // a steady stream
			}
			swg.Wait()
		}()
	}
	peer.box.waitCount(t, 100, time.Minute) // part of the stream goes over 443
	l.SetRules()
	took := a.waitStatus(t, 3*reprobe+10*time.Second, "back on 5222", func(s client.Status) bool {
		return s.State == client.Connected && s.Port == 5222
	})
	t.Logf("back on 5222 %v after it reopened (re-probe every %v ± 20 %%)", took, reprobe)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	a.box.waitCount(t, n, time.Minute)
	peer.box.waitCount(t, n, time.Minute)
	for _, x := range []*account{a, peer} {
		if got, dups, twice := x.box.count(); got != n || dups != 0 || twice != 0 {
			t.Errorf("%s: %d distinct of %d, %d duplicate deliveries, %d bodies twice", x.phone, got, n, dups, twice)
		}
	}
}

// TestLossyPath: 5 % of the packets lost in both directions at the box. Connecting and a two-way
// exchange of 500 messages each way still lose and duplicate nothing.
func TestLossyPath(t *testing.T) {
	t.Parallel()
	l := netlab.New(t)
	s := startChatd(t, l)
	peer := s.newAccount(l.Server, "15550000101", nil)
	l.SetRules(netlab.Loss(5))
	a := s.newAccount(l.Client, "15550000102", nil)
	a.waitConnected(t, 30*time.Second)
	const n = 500
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, pair := range [][2]*account{{a, peer}, {peer, a}} {
		from, to := pair[0], pair[1]
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if _, err := from.Send(ctx, to.phone, fmt.Sprintf("%s-%d", from.phone, i), text(fmt.Sprintf("%s #%d", from.phone, i))); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, x := range []*account{a, peer} {
		x.box.waitCount(t, n, time.Minute)
		if got, dups, twice := x.box.count(); got != n || dups != 0 || twice != 0 {
			t.Errorf("%s: %d distinct of %d, %d duplicate deliveries, %d bodies twice", x.phone, got, n, dups, twice)
		}
	}
	t.Logf("under 5 %% loss: reconnects %d, rtt %v", a.Status().Reconnects, a.Status().RTT)
}

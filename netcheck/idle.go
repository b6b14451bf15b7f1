package netcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/chatd-dev/chatd/transport"
	"github.com/chatd-dev/chatd/wire"
	"github.com/chatd-dev/chatd/wire/chatdpb"
)

// idleSteps is how many held connections the idle test uses: idle for Idle/idleSteps, 2×…, Idle.
const idleSteps = 10

// defaultPing is the client's default ping interval (client.DefaultPingInterval).
const defaultPing = 25 * time.Second

// idle measures how long the network lets an idle connection live: idleSteps probe connections on the
// first path that worked, held by the server (probe_hold_ms) with neither side sending anything (no
// pings, no TCP keepalive), each pinged after its idle time. A pong means it survived.
func (r *run) idle(ctx context.Context, rep *Report, eps []transport.Endpoint, key [32]byte) *IdleCheck {
	ic := &IdleCheck{}
	var ep transport.Endpoint
	for i, p := range rep.Paths {
		if p.Status == OK && (eps[i].Transport != transport.TransportTCP || !transport.On443(eps[i], eps)) {
			ep = eps[i]
			break
		}
	}
	if ep.IsZero() {
		ic.Status, ic.Error = Skipped, "no path works: nothing to hold idle"
		return ic
	}
	ic.Path = ep.String()
	survived := make([]bool, idleSteps+1)
	errs := make([]error, idleSteps+1)
	unknown := make([]bool, idleSteps+1) // the server did not hold it: says nothing about the network
	var wg sync.WaitGroup
	for k := 1; k <= idleSteps; k++ {
		d := r.cfg.Idle * time.Duration(k) / idleSteps
		wg.Add(1)
		go func() {
			defer wg.Done()
			survived[k], errs[k] = r.holdIdle(ctx, ep, key, d)
			var nh *notHeldError
			unknown[k] = errors.As(errs[k], &nh)
			st, detail := OK, "alive"
			switch {
			case unknown[k]:
				st, detail = Skipped, errText(errs[k])
			case !survived[k]:
				st, detail = Broken, "dead: "+errText(errs[k])
			}
			r.step(Step{Check: "idle", Target: fmt.Sprintf("%s idle %v", ep, d), Status: st, Detail: detail, Took: d})
		}()
	}
	wg.Wait()
	for k := 1; k <= idleSteps; k++ {
		d := r.cfg.Idle * time.Duration(k) / idleSteps
		if unknown[k] {
			continue
		}
		if survived[k] && ic.Died == 0 {
			ic.Survived = d
		}
		if !survived[k] && ic.Died == 0 {
			ic.Died = d
		}
	}
	switch {
	case ic.Died == 0:
		ic.Status, ic.Recommended = OK, defaultPing
	case ic.Survived == 0 && errs[1] != nil && ctx.Err() != nil:
		ic.Status, ic.Error = Skipped, "the test ran out of time"
	default:
		ic.Estimate = (ic.Survived + ic.Died) / 2
		ic.Recommended = min(defaultPing, max(ic.Survived/2, 5*time.Second))
		ic.Status = OK
		if ic.Survived < defaultPing+5*time.Second+10*time.Second {
			// The default pings (25 ± 5 s, and TCP keepalive at 15 s) may not be often enough.
			ic.Status = Degraded
		}
	}
	return ic
}

// holdIdle holds one probe connection idle for d, then pings it.
func (r *run) holdIdle(ctx context.Context, ep transport.Endpoint, key [32]byte, d time.Duration) (bool, error) {
	p, _, err := r.probe(ctx, ep, key, d+15*time.Second)
	if err != nil {
		return false, fmt.Errorf("opening the held connection: %w", err)
	}
	defer p.nc.Close()
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
		t.Stop()
		return false, ctx.Err()
	case <-t.C:
	}
	buf, _, err := p.sc.AppendEnvelope(nil, nil, &chatdpb.Envelope{Body: &chatdpb.Envelope_Ping{Ping: &chatdpb.Ping{Id: 1}}})
	if err != nil {
		return false, err
	}
	p.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.nc.Write(buf); err != nil {
		return false, err
	}
	env, err := readEnvelope(p.sc)
	if err != nil {
		return false, err
	}
	if cl := env.GetClose(); cl != nil && cl.GetReason() != chatdpb.CloseReason_PROBE_DONE || cl != nil && strings.Contains(cl.GetDetail(), "not held") {
		// The server did not hold the connection (too many held probes, or it is shutting down):
		// this step says nothing about the network.
		return false, &notHeldError{wire.CloseReasonName(cl.GetReason()) + ": " + cl.GetDetail()}
	}
	if env.GetPong() == nil {
		return false, fmt.Errorf("expected a pong, got %v", env)
	}
	return true, nil
}

// notHeldError is a held connection the server did not hold.
type notHeldError struct{ detail string }

func (e *notHeldError) Error() string {
	return "the server did not hold the connection (" + e.detail + ")"
}

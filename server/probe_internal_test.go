package server

import (
	"testing"
	"time"
)

// The documented probe defaults (docs/protocol.md §4.3).
func TestProbeDefaults(t *testing.T) {
	c := New(Config{}).cfg
	if c.MaxProbeHold != 15*time.Minute || c.ProbeHoldGrace != 5*time.Second {
		t.Errorf("hold cap %v, grace %v; want 15m, 5s", c.MaxProbeHold, c.ProbeHoldGrace)
	}
	if c.ProbeBurst != 30 || c.ProbeEvery != 2*time.Second {
		t.Errorf("probe limit %d then one every %v; want 30, 2s", c.ProbeBurst, c.ProbeEvery)
	}
	if c.MaxHeldProbesPerAddr != 32 || c.MaxHeldProbes != 1024 {
		t.Errorf("held-probe caps %d per address, %d in all; want 32, 1024", c.MaxHeldProbesPerAddr, c.MaxHeldProbes)
	}
	if New(Config{ProbeEvery: -1}).probeLimit != nil {
		t.Error("a negative ProbeEvery did not disable the probe limit")
	}
}

// Negative caps hold no probe.
func TestHoldProbeCaps(t *testing.T) {
	s := New(Config{MaxHeldProbes: -1})
	if s.acquireHold("192.0.2.1") {
		t.Fatal("a probe was held with MaxHeldProbes < 0")
	}
	s = New(Config{MaxHeldProbesPerAddr: 1, MaxHeldProbes: 2})
	if !s.acquireHold("a") || s.acquireHold("a") || !s.acquireHold("b") || s.acquireHold("c") {
		t.Fatal("caps of 1 per address and 2 in all not kept")
	}
	s.releaseHold("a")
	if len(s.heldProbes) != 1 || s.HeldProbes() != 1 {
		t.Fatalf("after a release: %v, %d held", s.heldProbes, s.HeldProbes())
	}
	if !s.acquireHold("c") {
		t.Fatal("a released slot was not free again")
	}
}

package engine

import (
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// TestProbeHealth: a run of temporary failures across the targets makes
// the prober blind, once (one event); one partner's failures among working
// probes do not; a probe that works again ends it.
func TestProbeHealth(t *testing.T) {
	ring := events.NewRing(10)
	h := &ProbeHealth{Events: ring}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	res := func(target, status string) *probe.Result {
		at = at.Add(time.Minute)
		return &probe.Result{Target: target, Status: status, Reason: "MX lookup failed: SERVFAIL", Time: at}
	}
	h.Observe(res("a.example", probe.StatusOK))
	for range 5 { // one broken partner among working ones
		h.Observe(res("broken.example", probe.StatusTemporary))
		h.Observe(res("a.example", probe.StatusOK))
	}
	if blind, _, _ := h.Blind(); blind {
		t.Fatal("one partner's temporary failures made the prober blind")
	}
	h.Observe(res("a.example", probe.StatusTemporary))
	h.Observe(res("b.example", probe.StatusTemporary))
	if blind, _, _ := h.Blind(); blind {
		t.Fatal("blind after two temporary failures")
	}
	h.Observe(res("c.example", probe.StatusTemporary))
	h.Observe(res("d.example", probe.StatusTemporary))
	blind, since, latest := h.Blind()
	if !blind || latest != "d.example: MX lookup failed: SERVFAIL" || since.IsZero() {
		t.Fatalf("after every target failed temporarily: blind %v since %v latest %q", blind, since, latest)
	}
	evs := ring.Recent(10)
	if len(evs) != 1 || evs[0].Kind != events.ProberBlind {
		t.Fatalf("events %+v, want one prober_blind", evs)
	}
	h.Observe(res("a.example", probe.StatusNoSTARTTLS))
	if blind, _, _ := h.Blind(); blind {
		t.Error("still blind after a probe that reached an MX")
	}
}

package engine

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// blindTargets is how many probes of different targets must fail
// temporarily in a row (or as many probes of every target probed so far,
// when there are fewer) before the prober counts as blind: one partner's
// broken DNS is not the resolver's.
const blindTargets = 3

// ProbeHealth notices a prober that learns nothing: every probe fails
// temporarily (the resolver is down, no route out), so the monitor checks
// no enforced entry and the status page would show only "temporary"
// verdicts. Observe every probe result; on becoming blind it publishes a
// prober_blind event, and Blind says so for the status page and metrics.
type ProbeHealth struct {
	Events *events.Ring // may be nil
	Logger *slog.Logger // may be nil

	mu     sync.Mutex
	seen   map[string]bool // targets ever probed, up to blindTargets
	run    map[string]bool // targets of the current run of temporary failures
	last   string          // the latest temporary failure's reason
	blind  bool
	since  time.Time
	probes int // probes in the current run
}

// Observe records one probe result.
func (h *ProbeHealth) Observe(r *probe.Result) {
	if r == nil {
		return
	}
	h.mu.Lock()
	if h.seen == nil {
		h.seen, h.run = map[string]bool{}, map[string]bool{}
	}
	if len(h.seen) < blindTargets {
		h.seen[r.Target] = true
	}
	if r.Status != probe.StatusTemporary {
		was := h.blind
		h.blind, h.probes = false, 0
		clear(h.run)
		h.mu.Unlock()
		if was && h.Logger != nil {
			h.Logger.Info("prober: probes succeed again", "target", r.Target, "status", r.Status)
		}
		return
	}
	h.probes++
	h.last = r.Target + ": " + r.Reason
	if len(h.run) < blindTargets {
		h.run[r.Target] = true
	}
	var ev *events.Event
	if !h.blind && h.probes >= blindTargets && len(h.run) >= len(h.seen) {
		h.blind, h.since = true, r.Time
		if h.since.IsZero() {
			h.since = time.Now()
		}
		ev = &events.Event{Time: h.since, Kind: events.ProberBlind, Rule: r.Target, Reason: fmt.Sprintf(
			"the last %d probes all failed temporarily (latest: %s): DNS or the network is failing, so enforced and testing entries are not being checked; check probe.resolver and outbound port 25",
			h.probes, h.last)}
	}
	h.mu.Unlock()
	if ev != nil {
		if h.Events != nil {
			h.Events.Publish(*ev)
		}
		if h.Logger != nil {
			h.Logger.Warn("prober is blind", "event", string(ev.Kind), "reason", ev.Reason)
		}
	}
}

// Blind reports whether every recent probe failed temporarily, since
// when, and the latest failure.
func (h *ProbeHealth) Blind() (blind bool, since time.Time, latest string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.blind, h.since, h.last
}

package main

import (
	"testing"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// TestProbeRingEvent: the probe cache events that undo or threaten a
// learned encrypt reach the event ring, each as a kind of its own; the
// others are only logged.
func TestProbeRingEvent(t *testing.T) {
	tests := []struct {
		kind string
		want events.Kind // "" for none
	}{
		{probe.EventDowngradeRefused, events.LearnedDowngrade},
		{probe.EventLearnedEvicted, events.LearnedEvicted},
		{probe.EventLearned, ""},
		{probe.EventUnlearned, ""},
	}
	for _, tc := range tests {
		ev, ok := probeRingEvent(probe.Event{Kind: tc.kind, Target: "bank.example", Reason: "why"})
		if ok != (tc.want != "") || ev.Kind != tc.want {
			t.Errorf("%s: published %v as %+v, want kind %q", tc.kind, ok, ev, tc.want)
			continue
		}
		if ok && (ev.Domain != "bank.example" || ev.Reason != "why") {
			t.Errorf("%s: event %+v lost the domain or reason", tc.kind, ev)
		}
	}
}

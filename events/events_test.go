package events

import (
	"fmt"
	"testing"
)

func TestRingKeepsNewestAndCounts(t *testing.T) {
	r := NewRing(3)
	var seen []string
	r.Subscribe(func(e Event) { seen = append(seen, e.Reason) })
	for i := 0; i < 5; i++ {
		r.Publish(Event{Kind: InboundBlocked, Reason: fmt.Sprint(i)})
	}
	got := r.Recent(10)
	if len(got) != 3 || got[0].Reason != "4" || got[2].Reason != "2" {
		t.Fatalf("Recent = %+v, want reasons 4,3,2", got)
	}
	if got[0].Time.IsZero() {
		t.Error("Publish did not set Time")
	}
	if n := r.Totals()[InboundBlocked]; n != 5 {
		t.Errorf("total = %d, want 5", n)
	}
	if len(seen) != 5 {
		t.Errorf("subscriber saw %d events, want 5", len(seen))
	}
	if got := r.Recent(1); len(got) != 1 || got[0].Reason != "4" {
		t.Errorf("Recent(1) = %+v", got)
	}
}

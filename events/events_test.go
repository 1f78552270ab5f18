package events

import (
	"fmt"
	"testing"
	"time"
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

func TestRingRestoreAndSince(t *testing.T) {
	r := NewRing(4)
	if r.Cap() != 4 {
		t.Fatalf("Cap = %d", r.Cap())
	}
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	var old []Event
	for i := 0; i < 6; i++ {
		old = append(old, Event{Time: base.Add(time.Duration(i) * time.Hour), Kind: ReloadFailed, Reason: fmt.Sprint(i)})
	}
	var notified int
	r.Subscribe(func(Event) { notified++ })
	r.restore(old)
	if notified != 0 || len(r.Totals()) != 0 {
		t.Errorf("Restore notified %d subscribers, totals %v", notified, r.Totals())
	}
	r.Publish(Event{Time: base.Add(10 * time.Hour), Kind: ReloadFailed, Reason: "new"})
	var got []string
	for _, e := range r.Recent(0) {
		got = append(got, e.Reason)
	}
	if fmt.Sprint(got) != "[new 5 4 3]" {
		t.Fatalf("Recent = %v", got)
	}
	got = got[:0]
	for _, e := range r.Since(base.Add(4 * time.Hour)) {
		got = append(got, e.Reason)
	}
	if fmt.Sprint(got) != "[new 5 4]" {
		t.Fatalf("Since(+4h) = %v", got)
	}
}

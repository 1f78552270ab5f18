package probe

import (
	"log/slog"
	"testing"
	"time"
)

// TestSetLearningOff: while learning is off a probe showing STARTTLS
// teaches nothing and one without it contradicts nothing; turned on, only
// later probes count.
func TestSetLearningOff(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	var ev events
	c := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	c.Put(synthetic("kept.example", t0, true)) // learned while on
	c.SetLearning(false)
	c.Put(synthetic("tls.example", t0, true))
	c.Put(synthetic("kept.example", t0.Add(time.Minute), false))
	if k := ev.kinds(); len(k) != 1 || k[0] != EventLearned {
		t.Fatalf("events = %v, want only the learned one from before learning was off", k)
	}
	if _, _, ok := c.Learned("tls.example"); ok {
		t.Fatal("Learned answers while learning is off")
	}
	c.SetLearning(true)
	if _, _, ok := c.Learned("tls.example"); ok {
		t.Fatal("tls.example learned from a probe made while learning was off")
	}
	if _, why, ok := c.Learned("kept.example"); !ok || why == "" {
		t.Fatal("a record learned before learning was off is gone")
	} else if c.learned["kept.example"].ContradictedBy != "" {
		t.Error("a probe made while learning was off contradicted a learned record")
	}
	clk.Add(time.Hour)
	c.Put(synthetic("tls.example", clk.Now(), true))
	if _, _, ok := c.Learned("tls.example"); !ok {
		t.Error("not learned from a probe after learning was turned on")
	}
}

// TestLearnedContradictedByTLSFailure: STARTTLS offered but the handshake
// failing defers encrypt mail as surely as no STARTTLS: it is a refused
// downgrade of a learned domain too.
func TestLearnedContradictedByTLSFailure(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	var ev events
	c := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	c.Put(synthetic("tls.example", t0, true))
	r := synthetic("tls.example", t0.Add(time.Hour), true)
	a := &r.MX[0].Addrs[0]
	a.TLS, a.ErrorClass, a.Error = nil, ClassHandshake, "TLS handshake after STARTTLS timed out"
	r.Status, r.Reason = "", ""
	r.Judge()
	if r.Status != StatusTLSFailed {
		t.Fatalf("status %q, want %q", r.Status, StatusTLSFailed)
	}
	c.Put(r)
	if k := ev.kinds(); len(k) != 2 || k[1] != EventDowngradeRefused {
		t.Errorf("events = %v, want learned then learned-downgrade-refused", k)
	}
}

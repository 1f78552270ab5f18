package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
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

// TestProbeCacheEventLoggedOnce: a probe cache event is one log line,
// tagged component=probe-cache once (serve logged it a second time,
// without the component), and an enforcement event reaches the ring.
func TestProbeCacheEventLoggedOnce(t *testing.T) {
	var logb syncBuffer
	ring := events.NewRing(10)
	path := filepath.Join(t.TempDir(), "probes.json")
	// One learned record at most: the second is evicted on load.
	c, err := srccache.New(srccache.Options{Path: path, Max: map[srccache.Kind]int{srccache.KindLearned: 1}})
	if err != nil {
		t.Fatal(err)
	}
	p := srccache.NewProbes(c, nil, probesOptions(newLogger(&logb, "text", "info"), ring, nil, time.Hour))
	confirmed := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	rec := func(d string) string {
		return `{"domain": "` + d + `", "first_learned": "` + confirmed + `", "last_confirmed": "` + confirmed + `"}`
	}
	if err := os.WriteFile(path, []byte(`{"version": 1, "learned": [`+rec("a.example")+`, `+rec("b.example")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.Loaded(rep)
	var lines []string
	for _, l := range strings.Split(logb.String(), "\n") {
		if strings.Contains(l, "probe cache event") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || strings.Count(lines[0], "component=probe-cache") != 1 || !strings.Contains(lines[0], "kind=learned-evicted") {
		t.Errorf("probe cache event logged as %q, want one line with component=probe-cache once:\n%s", lines, logb.String())
	}
	if evs := ring.Recent(10); len(evs) != 1 || evs[0].Kind != events.LearnedEvicted {
		t.Errorf("ring events %+v, want one learned_evicted", evs)
	}
}

// TestAlertLogComponentOnce: the alerter's log lines carry component=alert
// once (serve's logger had it, and alert.New added it again).
func TestAlertLogComponentOnce(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer hook.Close()
	var logb syncBuffer
	cfg := config.Default()
	cfg.Alerts.Webhook = hook.URL
	acfg := alertConfig(cfg, newLogger(&logb, "text", "info"))
	acfg.Delay = time.Millisecond
	al := alert.New(acfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- al.Run(ctx) }()
	al.Notify(events.Event{Time: time.Now(), Kind: events.ReloadFailed, Reason: "t.yaml:1: bad"})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logb.String(), "alert delivery failed") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	found := false
	for _, l := range strings.Split(logb.String(), "\n") {
		if strings.Contains(l, "msg=\"alert") {
			found = true
			if c := strings.Count(l, "component=alert"); c != 1 {
				t.Errorf("component=alert %d times in %q", c, l)
			}
		}
	}
	if !found {
		t.Fatalf("no alert log line:\n%s", logb.String())
	}
}

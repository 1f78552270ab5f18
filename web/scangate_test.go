package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
)

// TestReportBuiltOncePerPeriod: parallel /api/report requests for the
// same period read the event log once (one at a time, the report reused
// for reportReuse), and a later request builds a fresh report.
func TestReportBuiltOncePerPeriod(t *testing.T) {
	ring := events.NewRing(100)
	for i := range 50 {
		ring.Publish(events.Event{Time: now.Add(-time.Duration(i) * time.Minute), Kind: events.InboundBlocked, Domain: "bank.example"})
	}
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	s := &server{Options: Options{Engine: engine.New(nil, nil, ring, quiet()), Logger: quiet(),
		Now: func() time.Time { return time.Unix(0, clock.Load()) }}, gate: newScanGate()}
	srv := httptest.NewServer(http.HandlerFunc(s.apiReport))
	t.Cleanup(srv.Close)
	get := func() Report {
		resp, err := http.Get(srv.URL + "?since=24h")
		if err != nil {
			t.Error(err)
			return Report{}
		}
		defer resp.Body.Close()
		var rep Report
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&rep) != nil {
			t.Errorf("status %d", resp.StatusCode)
		}
		return rep
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rep := get(); rep.EventTotals[events.InboundBlocked] != 50 {
				t.Errorf("report counts %v", rep.EventTotals)
			}
		}()
	}
	wg.Wait()
	if n := s.gate.builds.Load(); n != 1 {
		t.Errorf("6 parallel requests built %d reports, want 1", n)
	}
	clock.Add(int64(reportReuse))
	ring.Publish(events.Event{Time: time.Unix(0, clock.Load()), Kind: events.InboundBlocked, Domain: "bank.example"})
	if rep := get(); rep.EventTotals[events.InboundBlocked] != 51 || s.gate.builds.Load() != 2 {
		t.Errorf("after %s: %d events counted, %d builds; want a fresh report of 51", reportReuse, rep.EventTotals[events.InboundBlocked], s.gate.builds.Load())
	}
}

// TestScanGateWaitsOrGivesUp: a request waits while another reads the
// event log, and one whose client gives up gets 503, not a second scan.
func TestScanGateWaitsOrGivesUp(t *testing.T) {
	s := &server{Options: Options{Engine: engine.New(nil, nil, events.NewRing(10), quiet()), Logger: quiet(), Now: time.Now}, gate: newScanGate()}
	if !s.gate.acquire(context.Background()) {
		t.Fatal("gate not free")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := httptest.NewRequest("GET", "/api/events?since=1h", nil).WithContext(ctx)
	w := httptest.NewRecorder()
	s.apiEvents(w, req)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("while the event log is read: %d %q", w.Code, w.Body.String())
	}
	s.gate.release()
	w = httptest.NewRecorder()
	s.apiEvents(w, httptest.NewRequest("GET", "/api/events?since=1h", nil))
	if w.Code != http.StatusOK {
		t.Errorf("gate free: %d", w.Code)
	}
}

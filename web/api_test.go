package web

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
)

// With the event log on, /api/report and /api/events count the period's
// events from its files, not from the ring's latest 100: 250 events of
// bank.example after one of else.example all count, else.example's is
// listed; the lists stay capped (20 a domain, 1000 in all) and a period
// that starts before what rotation kept says since when events are known.
func TestAPICountsFromTheEventLog(t *testing.T) {
	t0 := now.Add(-2 * time.Hour)
	event := func(i int, domain string) events.Event {
		return events.Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: events.InboundBlocked, Domain: domain,
			Rule: "partners", Source: "table.yaml:3", Action: "450 4.7.10 TLS is required", Reason: fmt.Sprintf("%06d", i)}
	}
	for _, tc := range []struct {
		name     string
		maxSize  int64 // of the event log, bytes
		keep     int
		publish  func(r *events.Ring) // at most 1 event a second from t0
		total    int                  // counted in the report
		listed   int                  // listed in the report
		domains  map[string][2]int    // per domain: counted, listed
		rotated  time.Duration        // events_rotated_before after t0; -1 for none
		elseOnly int                  // /api/events?domain=else.example: total
	}{
		{"more events than the ring", 10 << 20, 3, func(r *events.Ring) {
			r.Publish(event(0, "else.example"))
			for i := 1; i <= 250; i++ {
				r.Publish(event(i, "bank.example"))
			}
		}, 251, 21, map[string][2]int{"bank.example": {250, 20}, "else.example": {1, 1}}, -1, 1},
		{"1000 listed at most", 10 << 20, 3, func(r *events.Ring) {
			for i := range 1500 { // 60 domains × 25 events
				r.Publish(event(i, fmt.Sprintf("d%02d.example", i%60)))
			}
		}, 1500, 1000, map[string][2]int{"d00.example": {25, 16}, "d59.example": {25, 17}}, -1, 0}, // the newest 1000: 500…1499
		{"rotated away", 40 * 200, 1, func(r *events.Ring) { // some 40 events a file, 2 files
			r.Publish(event(0, "else.example"))
			for i := 1; i <= 250; i++ {
				r.Publish(event(i, "bank.example"))
			}
		}, -1, -1, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			l, err := events.OpenLog(path, events.LogOptions{MaxSize: tc.maxSize, Keep: tc.keep, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			ring := events.NewRing(100)
			if err := l.Attach(ring); err != nil {
				t.Fatal(err)
			}
			tc.publish(ring)
			if err := l.Close(); err != nil { // every event written
				t.Fatal(err)
			}
			srv := httptest.NewServer(New(Options{Engine: engine.New(nil, nil, ring, quiet()), Logger: quiet(),
				Hostname: "mx1.test", Now: func() time.Time { return now }}))
			defer srv.Close()

			var rep Report
			if code := getJSON(t, srv.URL+"/api/report?since=24h", &rep); code != 200 {
				t.Fatal(code)
			}
			total, listed := 0, 0
			for _, n := range rep.EventTotals {
				total += n
			}
			doms := map[string]ReportDomain{}
			for _, d := range rep.Domains {
				doms[d.Domain] = d
				listed += len(d.Events)
				if len(d.Events) > maxDomainEvents {
					t.Errorf("%s: %d events listed", d.Domain, len(d.Events))
				}
				for i := 1; i < len(d.Events); i++ {
					if d.Events[i].Time.After(d.Events[i-1].Time) {
						t.Errorf("%s: events not newest first", d.Domain)
					}
				}
			}
			if rep.EventsSource != "log" || rep.EventsError != "" {
				t.Errorf("coverage %+v, want the log's", rep.EventCoverage)
			}
			if tc.rotated < 0 {
				if rep.EventsRotatedBefore != nil {
					t.Errorf("events_rotated_before %v, want none", rep.EventsRotatedBefore)
				}
			} else if rep.EventsRotatedBefore == nil || !rep.EventsRotatedBefore.After(t0) || total >= 251 {
				t.Fatalf("rotated away: events_rotated_before %v with %d counted", rep.EventsRotatedBefore, total)
			} else {
				// What is counted is what the files and the ring still hold:
				// every event from events_rotated_before on.
				want := 250 - int(rep.EventsRotatedBefore.Sub(t0)/time.Second) + 1
				if total != want {
					t.Errorf("rotated away: %d counted from %v, want %d", total, rep.EventsRotatedBefore, want)
				}
			}
			if tc.total >= 0 && (total != tc.total || listed != tc.listed) {
				t.Errorf("counted %d, listed %d; want %d, %d", total, listed, tc.total, tc.listed)
			}
			for dom, want := range tc.domains {
				if got := doms[dom]; got.Counts["inbound_blocked"] != want[0] || len(got.Events) != want[1] {
					t.Errorf("%s: counted %v, listed %d; want %d, %d", dom, got.Counts, len(got.Events), want[0], want[1])
				}
			}

			var ev EventsView
			if code := getJSON(t, srv.URL+"/api/events?since=24h&domain=else.example", &ev); code != 200 {
				t.Fatal(code)
			}
			if ev.Total != tc.elseOnly || len(ev.Events) != tc.elseOnly || ev.EventsSource != "log" {
				t.Errorf("/api/events?domain=else.example: %d listed of %d (%+v), want %d", len(ev.Events), ev.Total, ev.EventCoverage, tc.elseOnly)
			}
			if code := getJSON(t, srv.URL+"/api/events?since=24h&limit=5", &ev); code != 200 || len(ev.Events) != 5 ||
				ev.Total != total || ev.Events[0].Time.Before(ev.Events[4].Time) {
				t.Errorf("/api/events?limit=5: %d listed of %d, want 5 of %d, newest first", len(ev.Events), ev.Total, total)
			}
		})
	}
}

// latest keeps the n newest events, newest first, whatever order they
// come in.
func TestLatest(t *testing.T) {
	at := func(s ...int) []events.Event {
		var out []events.Event
		for _, i := range s {
			out = append(out, events.Event{Time: now.Add(time.Duration(i) * time.Second), Reason: fmt.Sprint(i)})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		n    int
		in   []int
		want string
	}{
		{"newest first", 3, []int{9, 8, 7, 6, 5}, "[9 8 7]"},
		{"oldest first", 3, []int{1, 2, 3, 4, 5}, "[5 4 3]"},
		{"a late newer one", 3, []int{9, 7, 5, 3, 8}, "[9 8 7]"},
		{"fewer than n", 5, []int{2, 4}, "[4 2]"},
		{"n is 0", 0, []int{1}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := latest{n: tc.n}
			gained := 0
			for _, e := range at(tc.in...) {
				gained += l.add(e)
			}
			var got []string
			for _, e := range l.evs {
				got = append(got, e.Reason)
			}
			if s := fmt.Sprint(got); s != tc.want || gained != len(l.evs) {
				t.Errorf("kept %s (gained %d), want %s", s, gained, tc.want)
			}
		})
	}
}

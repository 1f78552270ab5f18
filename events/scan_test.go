package events

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// scanned is what Scan visited, summed up.
type scanned struct {
	total    int
	byDomain map[string]int
	cov      Coverage
}

func scan(t *testing.T, r *Ring, since time.Time) scanned {
	t.Helper()
	s := scanned{byDomain: map[string]int{}}
	cov, err := r.Scan(since, func(e Event) {
		if e.Time.Before(since) {
			t.Errorf("event of %v visited, before the period (%v)", e.Time, since)
		}
		s.total++
		s.byDomain[e.Domain]++
	})
	if err != nil {
		t.Fatal(err)
	}
	s.cov = cov
	return s
}

// evAt is event i of a run: one a second from t0, bank.example's but for
// every 500th, which is else.example's; every line has the same length.
func evAt(t0 time.Time, i int) Event {
	e := ev(0)
	e.Time, e.Reason = t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("%05d", i)
	if i%500 == 7 {
		e.Domain = "else.example"
	}
	return e
}

// waitWritten waits until the log's files hold n events.
func waitWritten(t *testing.T, path string, keep, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := readTail(path, keep, n+1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events written, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// With the event log attached, a period's events are counted from its
// files, not from the ring's latest Cap: 2,500 events through a ring of
// 1,000 all count, else.example's too; a period cut short counts what
// it holds; rotation that threw away part of the period says so.
func TestScanCountsThePeriodFromTheLog(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	lineLen := int64(len(mustLine(t, evAt(t0, 1000))))
	const n = 2500
	for _, tc := range []struct {
		name    string
		keep    int           // rotated files; each holds 200 events
		noLog   bool          // the ring alone
		since   time.Duration // after t0
		total   int
		other   int           // else.example's events counted
		rotated time.Duration // RotatedBefore after t0, -1 for none
	}{
		{"all of it", 20, false, -time.Hour, n, 5, -1},
		{"from event 1000 on", 20, false, 1000 * time.Second, 1500, 3, -1},
		// 1600…2499 on disk, 1500…1599 in the ring only
		{"the oldest files rotated away", 4, false, -time.Hour, 1000, 2, 1500 * time.Second},
		{"no event log: the ring's 1000 only", 0, true, -time.Hour, 1000, 2, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "events.jsonl")
			r := NewRing(1000)
			if !tc.noLog {
				l, err := OpenLog(path, LogOptions{MaxSize: 200 * lineLen, Keep: tc.keep, Queue: n})
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if err := l.Attach(r); err != nil {
					t.Fatal(err)
				}
			}
			for i := range n {
				r.Publish(evAt(t0, i))
			}
			if !tc.noLog {
				waitWritten(t, path, tc.keep, min(n, (tc.keep+1)*200-100))
			}
			got := scan(t, r, t0.Add(tc.since))
			if got.total != tc.total || got.byDomain["else.example"] != tc.other || got.byDomain["bank.example"] != tc.total-tc.other {
				t.Errorf("counted %d (%v), want %d with %d of else.example", got.total, got.byDomain, tc.total, tc.other)
			}
			if got.cov.FromLog == tc.noLog || got.cov.RingCap != 1000 {
				t.Errorf("coverage %+v", got.cov)
			}
			wantRotated := time.Time{}
			if tc.rotated >= 0 {
				wantRotated = t0.Add(tc.rotated)
			}
			if !got.cov.RotatedBefore.Equal(wantRotated) {
				t.Errorf("RotatedBefore = %v, want %v", got.cov.RotatedBefore, wantRotated)
			}
		})
	}
}

// Every event counts once, whether it is in the files, in the ring, or in
// both: restored into the ring at start, written while the daemon runs
// (with a monotonic clock reading, a local time zone, invalid UTF-8), or
// published after the log was closed (dropped: in the ring only).
func TestScanCountsEachEventOnce(t *testing.T) {
	t0 := time.Now().Add(-time.Hour)
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var before []Event
	for i := range 1500 {
		before = append(before, evAt(t0, i))
	}
	odd := evAt(t0, 1500)
	odd.Time = odd.Time.In(time.FixedZone("CEST", 2*3600))
	odd.Reason, odd.Sender = "bad \xff\xfe bytes", "\xc3"
	before = append(before, odd)
	l, err := OpenLog(path, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range before {
		l.Append(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart: the ring gets the files' last 1000 events back.
	l, err = OpenLog(path, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRing(1000)
	if err := l.Attach(r); err != nil {
		t.Fatal(err)
	}
	if got := scan(t, r, t0.Add(-time.Minute)); got.total != 1501 {
		t.Fatalf("after a restart: %d counted, want 1501", got.total)
	}
	for range 3 {
		e := odd
		e.Time = time.Time{} // Publish sets time.Now(), monotonic reading included
		r.Publish(e)
	}
	waitWritten(t, path, DefaultLogKeep, 1504)
	if got := scan(t, r, t0.Add(-time.Minute)); got.total != 1504 {
		t.Fatalf("after 3 more: %d counted, want 1504", got.total)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r.Publish(odd) // dropped by the closed log
	if got := scan(t, r, t0.Add(-time.Minute)); got.total != 1505 || l.Dropped() != 1 {
		t.Fatalf("with one event in the ring only: %d counted, want 1505 (dropped %d)", got.total, l.Dropped())
	}

	// The line being written when the current file is read is not an
	// event yet, and no error.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"time":"2026-05-01T00:00:00Z","kind":"inbound_blo`)
	f.Close()
	if got := scan(t, r, t0.Add(-time.Minute)); got.total != 1505 {
		t.Fatalf("with a line being written: %d counted, want 1505", got.total)
	}
}

// A file that cannot be opened: the ring's events are counted, as without
// an event log, and the error is returned.
func TestScanUnreadableLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	l, err := OpenLog(path, LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := NewRing(10)
	if err := l.Attach(r); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := range 3 {
		r.Publish(evAt(t0, i))
	}
	waitWritten(t, path, DefaultLogKeep, 3)
	if err := os.Mkdir(path+".1", 0o700); err != nil { // a directory: open works, reading fails
		t.Fatal(err)
	}
	n := 0
	cov, err := r.Scan(t0.Add(-time.Hour), func(Event) { n++ })
	if err == nil || n != 3 || !cov.FromLog {
		t.Errorf("Scan: %d events, %+v, %v; want 3, from the log, an error", n, cov, err)
	}
}

package engine

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestStatsFile: the counters saved beside the event log come back added
// to a fresh Stats with their start time, within its bound on domains; a
// damaged file is kept aside and counting starts afresh.
func TestStatsFile(t *testing.T) {
	if got := StatsPath("/var/lib/tlspolicyd/events.jsonl"); got != "/var/lib/tlspolicyd/events.inbound.json" {
		t.Errorf("StatsPath = %q", got)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "events.inbound.json")
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := newStats(2)
	s.Observe("", "a@one.example", "TLSv1.3")
	s.Observe("", "b@one.example", "")
	s.Observe("", "a@two.example", "TLSv1.2")
	s.Observe("", "a@three.example", "") // beyond the bound: (other)
	if err := s.SaveFile(path, t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r := newStats(2)
	r.Observe("", "c@one.example", "TLSv1.3") // counted before the restore
	if since := r.LoadFile(path, t0.Add(2*time.Hour), quietLogger()); !since.Equal(t0) {
		t.Errorf("since %v, want %v", since, t0)
	}
	want := []DomainStats{
		{Domain: "(other)", WithoutTLS: 1, Versions: map[string]uint64{}},
		{Domain: "one.example", WithTLS: 2, WithoutTLS: 1, Versions: map[string]uint64{"TLSv1.3": 2}},
		{Domain: "two.example", WithTLS: 1, Versions: map[string]uint64{"TLSv1.2": 1}},
	}
	if got := r.Snapshot(); !reflect.DeepEqual(got, want) {
		t.Errorf("restored %+v\nwant %+v", got, want)
	}
	// A bound lower than the file's domains counts the rest as (other).
	small := newStats(1)
	small.LoadFile(path, t0, quietLogger())
	if n := len(small.Snapshot()); n != 2 {
		t.Errorf("bound 1: %d rows, want one domain and (other)", n)
	}

	os.WriteFile(path, []byte(`{"version":1,"since":"2026-`), 0o600)
	d := newStats(10)
	now := t0.Add(3 * time.Hour)
	if since := d.LoadFile(path, now, quietLogger()); !since.Equal(now) || len(d.Snapshot()) != 0 {
		t.Errorf("damaged file: since %v, %d rows", since, len(d.Snapshot()))
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
		t.Errorf("damaged file not kept aside: %v", aside)
	}
}

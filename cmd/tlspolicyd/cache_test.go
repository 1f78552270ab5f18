package main

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// readCache (query, tlsrpt) bounds each kind as the daemon does, by the
// configuration, not srccache's default: with probe.max_entries above
// 100,000 a command must not drop learned policies the daemon enforces.
// Shown here from below, with a bound smaller than the file.
func TestReadCacheUsesConfiguredBounds(t *testing.T) {
	cfg := config.Default()
	cfg.Probe.Cache = filepath.Join(t.TempDir(), "probes.json")
	c, err := srccache.New(srccache.Options{Path: cfg.Probe.Cache})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, d := range []string{"a.test", "b.test", "c.test"} {
		_ = c.Put(&srccache.Record{Kind: srccache.KindLearned, Domain: d, Expires: now.Add(time.Hour),
			Learned: &probe.LearnedRecord{Domain: d, FirstLearned: now, LastConfirmed: now}})
	}
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	cfg.Probe.MaxEntries = 2
	r, _ := readCache(cfg)
	if n := r.Count(srccache.KindLearned); n != 2 {
		t.Fatalf("readCache holds %d learned records, want probe.max_entries = 2", n)
	}
}

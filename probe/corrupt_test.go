package probe

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCacheCorruptSalvage: a torn cache file (a disk full, a bit flip,
// an editor) gives up what parses before the damage: the learned records
// written before it keep being enforced, the file is kept aside, and an
// EventCorrupt says what was saved and where the original is.
func TestCacheCorruptSalvage(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	f := cacheFile{Version: cacheFileVersion, Saved: now}
	for _, d := range []string{"a.example", "b.example"} {
		f.Learned = append(f.Learned, learnedRec{Domain: d, FirstLearned: now, LastConfirmed: now})
	}
	f.Entries = []cacheEntry{{LastUsed: now, Result: synthetic("a.example", now, true)}}
	// learned is written after entries: the damage falls in the second
	// learned record.
	data, err := json.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	cut := bytes.LastIndex(data, []byte(`"b.example"`))
	torn := append(append([]byte{}, data[:cut]...), "\x00\x00garbage"...)
	path := filepath.Join(t.TempDir(), "probes.json")
	if err := os.WriteFile(path, torn, 0o640); err != nil {
		t.Fatal(err)
	}
	var ev events
	clk := newClock(now)
	c := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	c.Load(path)
	if _, _, ok := c.Learned("a.example"); !ok {
		t.Error("a.example, written before the damage, not salvaged")
	}
	if _, _, ok := c.Learned("b.example"); ok {
		t.Error("b.example, torn, learned anyway")
	}
	if c.Len() != 1 {
		t.Errorf("%d results salvaged, want 1", c.Len())
	}
	aside := path + ".corrupt-" + strings.TrimSpace(jsonInt(now.Unix()))
	if b, err := os.ReadFile(aside); err != nil || !bytes.Equal(b, torn) {
		t.Fatalf("original not kept as %s: %v", aside, err)
	}
	k := ev.kinds()
	if len(k) != 1 || k[0] != EventCorrupt {
		t.Fatalf("events %v, want one %s", k, EventCorrupt)
	}
	e := ev.last()
	for _, want := range []string{"probe cache " + path + " is corrupt (not a complete JSON file", "kept as " + aside, "2 record(s) salvaged, the rest lost"} {
		if !strings.Contains(e.Reason, want) {
			t.Errorf("event reason %q lacks %q", e.Reason, want)
		}
	}
	// The next Save writes the salvaged records to the file's own name.
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	d := NewCache(CacheConfig{Now: clk.Now, OnEvent: ev.add, Logger: slog.New(slog.DiscardHandler)})
	d.Load(path)
	if _, _, ok := d.Learned("a.example"); !ok || d.Corrupted() != 0 {
		t.Errorf("after Save: a.example learned %v, corrupted %d", ok, d.Corrupted())
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

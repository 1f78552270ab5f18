package srccache

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// probeFileV1 writes an old probe cache file (version 1) with the
// results (all used at now) and learned records given.
func probeFileV1(t *testing.T, path string, now time.Time, results []*probe.Result, learned []probe.LearnedRecord) []byte {
	t.Helper()
	type entry struct {
		LastUsed time.Time     `json:"last_used"`
		Result   *probe.Result `json:"result"`
	}
	f := struct {
		Version int                   `json:"version"`
		Saved   time.Time             `json:"saved"`
		Entries []entry               `json:"entries"`
		Learned []probe.LearnedRecord `json:"learned"`
	}{Version: 1, Saved: now, Learned: learned}
	for _, r := range results {
		cp := *r
		cp.Expires = cp.Time.Add(probe.DefaultTTL)
		f.Entries = append(f.Entries, entry{LastUsed: now, Result: &cp})
	}
	data, err := json.Marshal(&f)
	if err != nil {
		t.Fatal(err)
	}
	if path != "" {
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// TestUpgradeProbeCacheV1: the old probe cache file is read in place:
// its results and learned policies answer as before, the first Save
// writes the new format and keeps the old file as PATH.v1, and a restart
// reads the new file.
func TestUpgradeProbeCacheV1(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	path := filepath.Join(t.TempDir(), "probes.json")
	old := probeFileV1(t, path, now, []*probe.Result{synthetic("a.example", now, true), synthetic("b.example", now, false)},
		[]probe.LearnedRecord{{Domain: "a.example", FirstLearned: now.Add(-time.Hour), LastConfirmed: now},
			// In force under the table's learn_max_age of 2000h, not the default.
			{Domain: "old.example", FirstLearned: now.Add(-1500 * time.Hour), LastConfirmed: now.Add(-1000 * time.Hour)},
			{Domain: "lapsed.example", FirstLearned: now.Add(-4000 * time.Hour), LastConfirmed: now.Add(-3000 * time.Hour)}})
	var ev evlog
	p, rep := reload(t, path, 0, ProbesOptions{OnEvent: ev.add, LearnMaxAge: 2000 * time.Hour})
	if rep.Upgraded != "probe cache version 1" || rep.Corrupt != nil || rep.Records != 5 {
		t.Fatalf("Load = %+v, want 2 results and 3 learned records upgraded", rep)
	}
	for d, want := range map[string]bool{"a.example": true, "old.example": true, "lapsed.example": false} {
		if _, _, ok := p.Learned(d); ok != want {
			t.Errorf("%s learned = %v, want %v", d, ok, want)
		}
	}
	if r, ok := p.Get("b.example"); !ok || r.Status != probe.StatusNoSTARTTLS {
		t.Errorf("b.example = %+v, %v", r, ok)
	}
	_, why, ok := p.Learned("a.example")
	if !ok || !strings.Contains(why, "first seen "+now.Add(-time.Hour).Format(time.RFC3339)) {
		t.Errorf("a.example learned %v: %q", ok, why)
	}
	// Loaded gave the learned records the learn_max_age in use: the
	// lapsed one goes at the scheduler's next look.
	if r := p.c.Get(KindLearned, "a.example"); !r.Expires.Equal(now.Add(2000 * time.Hour)) {
		t.Errorf("learned record expires %v, want learn_max_age 2000h after its confirmation", r.Expires)
	}
	if r := p.c.Get(KindLearned, "lapsed.example"); r == nil || !r.Refresh.Before(now) {
		t.Errorf("lapsed record %+v, want it due for its lapse", r)
	}
	if r := p.c.Get(KindProbe, "a.example"); !r.Used.Equal(now) {
		t.Errorf("result used %v, want the old file's last_used %v", r.Used, now)
	}
	if len(ev.all) != 0 {
		t.Errorf("events %+v, want none", ev.all)
	}
	if err := p.c.Save(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path + ".v1"); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("old file not kept as PATH.v1: %v", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte(`"version":2`)) {
		t.Fatalf("new file: %.80s", b)
	}
	d, rep := reload(t, path, 0, ProbesOptions{LearnMaxAge: 2000 * time.Hour})
	if rep.Upgraded != "" || rep.Records != 4 || d.Len() != 2 { // the lapsed record is not restored
		t.Fatalf("reload = %+v, %d results", rep, d.Len())
	}
	if _, _, ok := d.Learned("a.example"); !ok {
		t.Error("learned policy lost across the upgrade")
	}
}

// TestProbesCorruptFile: a damaged file is kept aside, reported (an
// EventCorrupt, Corrupted), and the cache works and replaces it at the
// next Save.
func TestProbesCorruptFile(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":   "\x00\x01 not json",
		"truncated": `{"version":1,"entries":[{"last_used":"2026-01-01T00:00:00Z","result":{"target":"a.exa`,
		"version":   `{"version":99,"entries":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var ev evlog
			c, rep := reload(t, path, 0, ProbesOptions{OnEvent: ev.add})
			if c.Len() != 0 || rep.Corrupt == nil {
				t.Errorf("corrupt file gave %d results, report %+v", c.Len(), rep)
			}
			if k := ev.kinds(); len(k) != 1 || k[0] != probe.EventCorrupt || ev.last().Target != path {
				t.Errorf("events %+v, want one %s", ev.all, probe.EventCorrupt)
			}
			// The damaged file is kept aside, not overwritten.
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("corrupt file kept aside as %v, want one PATH.corrupt-<time>", aside)
			}
			if b, err := os.ReadFile(aside[0]); err != nil || string(b) != content {
				t.Errorf("%s holds %q, %v; want the original", aside[0], b, err)
			}
			if c.Corrupted() != 1 {
				t.Errorf("Corrupted() = %d, want 1", c.Corrupted())
			}
			// The cache works and its next save replaces the file.
			c.Put(synthetic("a.example", time.Now(), true))
			if err := c.c.Save(); err != nil {
				t.Fatal(err)
			}
			d, _ := reload(t, path, 0, ProbesOptions{})
			if d.Len() != 1 || d.Corrupted() != 0 {
				t.Errorf("after save: %d results, want 1; corrupted %d", d.Len(), d.Corrupted())
			}
		})
	}
}

// TestProbesLoadSkipsBadRecords: one malformed record (a type error in
// one result, a bad learned record, …) costs that record only: the
// learned records beside it survive Load and the next Save, and the loss
// is reported.
func TestProbesLoadSkipsBadRecords(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	good, err := json.Marshal(map[string]any{"last_used": now, "result": synthetic("ok.example", now, true)})
	if err != nil {
		t.Fatal(err)
	}
	stamp := `"` + now.Format(time.RFC3339) + `"`
	learned := `{"domain":"lawfirm.example","first_learned":` + stamp + `,"last_confirmed":` + stamp + `}`
	tests := []struct {
		name    string
		entry   string // a bad entry, or ""
		learned string // a bad learned record, or ""
	}{
		{name: "type error in a result",
			entry: `{"last_used":` + stamp + `,"result":{"target":"bad.example","time":` + stamp + `,"duration_ns":"oops"}}`},
		{name: "type error in a nested address",
			entry: `{"result":{"target":"nested.example","time":` + stamp + `,"mx":[{"host":"mx","addrs":[{"port":"25"}]}]}}`},
		{name: "entry not an object", entry: `"oops"`},
		{name: "result not an object", entry: `{"result":[1,2]}`},
		{name: "result without time", entry: `{"result":{"target":"notime.example"}}`},
		{name: "result with a bad target", entry: `{"result":{"target":"Bad Target","time":` + stamp + `}}`},
		{name: "no result", entry: `{"result":null}`},
		{name: "type error in a learned record",
			learned: `{"domain":"other.example","first_learned":` + stamp + `,"last_confirmed":5}`},
		{name: "learned record not an object", learned: `17`},
		{name: "learned record with a bad domain", learned: `{"domain":"x..y","last_confirmed":` + stamp + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries := []string{string(good)}
			if tc.entry != "" {
				entries = []string{tc.entry, string(good)}
			}
			learnedRecs := []string{learned}
			if tc.learned != "" {
				learnedRecs = []string{tc.learned, learned}
			}
			path := filepath.Join(t.TempDir(), "probes.json")
			file := `{"version":1,"saved":` + stamp + `,"entries":[` + strings.Join(entries, ",") +
				`],"learned":[` + strings.Join(learnedRecs, ",") + `]}`
			if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
				t.Fatal(err)
			}
			var ev evlog
			c, rep := reload(t, path, 0, ProbesOptions{OnEvent: ev.add})
			if _, _, ok := c.Learned("lawfirm.example"); !ok {
				t.Fatalf("learned record lost to a bad record beside it; report %+v", rep)
			}
			if r, ok := c.Get("ok.example"); !ok || r.Status != probe.StatusOK || c.Len() != 1 {
				t.Errorf("good result not kept alone: %v %+v, %d results", ok, r, c.Len())
			}
			if cr := rep.Corrupt; cr == nil || cr.Lost != 1 || cr.Salvaged != 2 || !strings.Contains(cr.Reason(), "1 invalid record(s)") {
				t.Errorf("report %+v, want 1 record lost, 2 salvaged", rep.Corrupt)
			}
			if k := ev.kinds(); len(k) != 1 || k[0] != probe.EventCorrupt {
				t.Errorf("events %v, want one %s", k, probe.EventCorrupt)
			}
			// The next Save writes the learned record back.
			if err := c.c.Save(); err != nil {
				t.Fatal(err)
			}
			d, _ := reload(t, path, 0, ProbesOptions{})
			if _, _, ok := d.Learned("lawfirm.example"); !ok {
				t.Error("learned record missing from the file the next Save wrote")
			}
			if d.Len() != 1 {
				t.Errorf("%d results after Save and Load, want 1", d.Len())
			}
		})
	}
}

// TestProbesCorruptSalvage: a torn cache file (a disk full, a bit flip,
// an editor) gives up what parses before the damage: the learned records
// written before it keep being enforced, the file is kept aside, and an
// EventCorrupt says what was saved and where the original is.
func TestProbesCorruptSalvage(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	var learned []probe.LearnedRecord
	for _, d := range []string{"a.example", "b.example"} {
		learned = append(learned, probe.LearnedRecord{Domain: d, FirstLearned: now, LastConfirmed: now})
	}
	// learned is written after entries: the damage falls in the second
	// learned record.
	data := probeFileV1(t, "", now, []*probe.Result{synthetic("a.example", now, true)}, learned)
	cut := bytes.LastIndex(data, []byte(`"b.example"`))
	torn := append(append([]byte{}, data[:cut]...), "\x00\x00garbage"...)
	path := filepath.Join(t.TempDir(), "probes.json")
	if err := os.WriteFile(path, torn, 0o640); err != nil {
		t.Fatal(err)
	}
	var ev evlog
	clk := newClock(now)
	c, _ := reload(t, path, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	if _, _, ok := c.Learned("a.example"); !ok {
		t.Error("a.example, written before the damage, not salvaged")
	}
	if _, _, ok := c.Learned("b.example"); ok {
		t.Error("b.example, torn, learned anyway")
	}
	if c.Len() != 1 {
		t.Errorf("%d results salvaged, want 1", c.Len())
	}
	aside := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
	if b, err := os.ReadFile(aside); err != nil || !bytes.Equal(b, torn) {
		t.Fatalf("original not kept as %s: %v", aside, err)
	}
	k := ev.kinds()
	if len(k) != 1 || k[0] != probe.EventCorrupt {
		t.Fatalf("events %v, want one %s", k, probe.EventCorrupt)
	}
	e := ev.last()
	for _, want := range []string{path + " is corrupt (not a complete JSON file", "kept as " + aside, "2 record(s) salvaged, the rest lost"} {
		if !strings.Contains(e.Reason, want) {
			t.Errorf("event reason %q lacks %q", e.Reason, want)
		}
	}
	// The next Save writes the salvaged records to the file's own name.
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	d, _ := reload(t, path, 0, ProbesOptions{Now: clk.Now, OnEvent: ev.add})
	if _, _, ok := d.Learned("a.example"); !ok || d.Corrupted() != 0 {
		t.Errorf("after Save: a.example learned %v, corrupted %d", ok, d.Corrupted())
	}
}

// TestProbesSaveFailure: when the cache file cannot be written (here its
// directory is gone), Save reports it, the file written before stays as it
// was, nothing is left behind, and the change is kept for the next Save.
func TestProbesSaveFailure(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "probes.json")
	now := time.Now().UTC().Truncate(time.Second)
	c, _ := reload(t, path, 0, ProbesOptions{})
	c.Put(synthetic("a.example", now, true))
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The directory disappears (moved away): saving fails.
	moved := filepath.Join(root, "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	c.Put(synthetic("b.example", now, true))
	if err := c.c.Save(); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
	if b, err := os.ReadFile(filepath.Join(moved, "probes.json")); err != nil || !bytes.Equal(b, saved) {
		t.Errorf("the file saved before changed (%v)", err)
	}
	if entries, _ := os.ReadDir(moved); len(entries) != 1 {
		t.Errorf("%d files next to the cache file, want it alone", len(entries))
	}
	if !c.c.Changed() {
		t.Fatal("a failed Save forgot the change")
	}
	// The directory is back: the next Save writes both results.
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	if err := c.c.Save(); err != nil {
		t.Fatal(err)
	}
	d, _ := reload(t, path, 0, ProbesOptions{})
	if d.Len() != 2 {
		t.Errorf("reloaded %d results, want 2", d.Len())
	}
}

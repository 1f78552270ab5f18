package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/snapshot"
)

const cacheFileVersion = 1

type cacheFile struct {
	Version int          `json:"version"`
	Saved   time.Time    `json:"saved"`
	Entries []cacheEntry `json:"entries"`
	Learned []learnedRec `json:"learned"`
}

type cacheEntry struct {
	LastUsed time.Time `json:"last_used"`
	Result   *Result   `json:"result"`
}

// loadedFile is the cache file as Load reads it: every result and learned
// record is decoded on its own, so that one malformed record costs that
// record only, not the learned policies beside it.
type loadedFile struct {
	Version int               `json:"version"`
	Entries []json.RawMessage `json:"entries"`
	Learned []json.RawMessage `json:"learned"`
}

// maxSkipLogs caps the lines Load logs for skipped records; the rest are
// counted in its summary line.
const maxSkipLogs = 20

// Load reads the results persisted at path and makes path the file Save
// writes. A missing file is an empty cache. Load never fails the caller:
// a probe cache is an optimisation, not configuration. Each result and
// learned record is decoded and checked on its own: a bad one is skipped
// and logged with its key, the others are kept, for the learned records
// are the STRIPTLS defence and must not all go because of one bad line.
// A file that is not JSON (torn, garbled) gives up the records that parse
// before the damage. Whenever anything is lost — a record skipped, a
// damaged or unknown-version file — the file is kept aside as
// PATH.corrupt-<unix time> (so the next Save does not destroy it), an
// EventCorrupt is emitted and Corrupted counts it.
func (c *Cache) Load(path string) {
	c.mu.Lock()
	c.path = path
	c.mu.Unlock()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Info("no probe cache yet", "path", path)
		return
	}
	if err != nil {
		c.log.Error("probe cache unreadable, starting empty", "path", path, "error", err)
		return
	}
	var f loadedFile
	var problem error
	lost := 0
	if err := json.Unmarshal(data, &f); err != nil {
		problem = fmt.Errorf("not a complete JSON file: %w", err)
		lost = -1
		sv := snapshot.SalvageArrays(data, "entries", "learned")
		f = loadedFile{Version: cacheFileVersion, Entries: sv["entries"], Learned: sv["learned"]}
	} else if f.Version != cacheFileVersion {
		problem = fmt.Errorf("unknown version %d", f.Version)
		lost = len(f.Entries) + len(f.Learned)
		f = loadedFile{}
	}
	skipped := 0
	skip := func(what string, i int, key string, why error) {
		skipped++
		if skipped <= maxSkipLogs {
			c.log.Warn("probe cache: invalid record skipped", "path", path, "record", fmt.Sprintf("%s[%d]", what, i),
				"key", key, "error", why)
		}
	}
	entries := make([]*entry, 0, len(f.Entries))
	for i, raw := range f.Entries {
		var fe cacheEntry
		if err := json.Unmarshal(raw, &fe); err != nil {
			skip("entries", i, recordKey(raw, "result", "target"), err)
			continue
		}
		r := fe.Result
		if err := validResult(r); err != nil {
			skip("entries", i, recordKey(raw, "result", "target"), err)
			continue
		}
		e := &entry{res: r}
		e.lastUsed.Store(fe.LastUsed.UnixNano())
		entries = append(entries, e)
	}
	now := c.cfg.Now()
	learned := make([]*learnedRec, 0, len(f.Learned))
	for i, raw := range f.Learned {
		rec := new(learnedRec)
		if err := json.Unmarshal(raw, rec); err != nil {
			skip("learned", i, recordKey(raw, "domain"), err)
			continue
		}
		if err := validLearned(rec); err != nil {
			skip("learned", i, rec.Domain, err)
			continue
		}
		learned = append(learned, rec)
	}
	c.mu.Lock()
	for _, e := range entries {
		c.entries[e.res.Target] = e
	}
	for _, rec := range learned {
		c.learned[rec.Domain] = rec
	}
	// A file written under a higher MaxEntries.
	for len(c.entries) > c.cfg.MaxEntries {
		c.evictResultLocked("")
	}
	var evs []Event
	for len(c.learned) > c.cfg.MaxEntries {
		if ev := c.evictLearnedLocked("", now); ev != nil {
			evs = append(evs, *ev)
		}
	}
	n, l := len(c.entries), len(c.learned)
	c.mu.Unlock()
	if skipped > 0 {
		c.log.Warn("probe cache: invalid records skipped", "path", path, "skipped", skipped)
		if problem == nil {
			problem = fmt.Errorf("%d invalid record(s)", skipped)
		}
		if lost >= 0 {
			lost += skipped
		}
	}
	c.log.Info("probe cache loaded", "path", path, "results", n, "learned", l)
	if problem != nil {
		evs = append(evs, c.quarantine(path, problem, len(entries)+len(learned), lost, now))
	}
	c.emit(evs)
}

// quarantine keeps the damaged cache file at path aside and returns the
// EventCorrupt that says so; the salvaged records are saved to path by
// the next Save.
func (c *Cache) quarantine(path string, problem error, salvaged, lost int, now time.Time) Event {
	cr := snapshot.Corrupt{Path: path, Err: problem, Salvaged: salvaged, Lost: lost, What: "probe cache"}
	aside, err := snapshot.Quarantine(path, now)
	if err != nil {
		c.log.Error("probe cache: corrupt file not kept aside", "path", path, "error", err)
	}
	cr.Aside = aside
	c.corrupted.Add(1)
	c.dirty.Store(true)
	c.log.Error("probe cache corrupt", "path", path, "aside", aside, "salvaged", salvaged, "lost", lost, "error", problem)
	return Event{Time: now, Kind: EventCorrupt, Target: path, Reason: cr.Reason()}
}

// Corrupted returns how many times Load found the cache file damaged.
func (c *Cache) Corrupted() uint64 { return c.corrupted.Load() }

// validResult checks a result read from the cache file.
func validResult(r *Result) error {
	if r == nil {
		return errors.New("no result")
	}
	if r.Time.IsZero() {
		return errors.New("no time")
	}
	if key, err := Canonical(r.Target); err != nil {
		return err
	} else if key != r.Target {
		return fmt.Errorf("target %q is not canonical (%q)", r.Target, key)
	}
	return nil
}

// validLearned checks a learned record read from the cache file.
func validLearned(rec *learnedRec) error {
	if key, err := Canonical(rec.Domain); err != nil {
		return err
	} else if key != rec.Domain {
		return fmt.Errorf("domain %q is not canonical (%q)", rec.Domain, key)
	}
	if rec.LastConfirmed.IsZero() {
		return errors.New("no last_confirmed time")
	}
	return nil
}

// recordKey digs the string at path (object keys) out of a record that
// did not decode, for the log line; "" if it cannot. It is as lenient as
// it can be: only the objects on the way and the string itself must be
// well-formed.
func recordKey(raw json.RawMessage, path ...string) string {
	for _, k := range path {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return ""
		}
		raw = m[k]
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return printable(s, false)
}

// Save writes every result and learned record to the cache file
// atomically: a temporary file in the same directory, fsync, rename over
// the old file, fsync of the directory. A crash leaves the old file or
// the new one, never a torn one. Without a path it does nothing.
func (c *Cache) Save() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.dirty.Store(false)
	f := cacheFile{Version: cacheFileVersion, Saved: c.cfg.Now().UTC()}
	c.mu.RLock()
	path := c.path
	for _, e := range c.entries {
		f.Entries = append(f.Entries, cacheEntry{LastUsed: time.Unix(0, e.lastUsed.Load()).UTC(), Result: e.res})
	}
	for _, rec := range c.learned {
		f.Learned = append(f.Learned, *rec)
	}
	c.mu.RUnlock()
	if path == "" {
		return nil
	}
	c.cleanOnce.Do(func() { c.removeStaleTemps(path) })
	data, err := json.Marshal(&f)
	if err != nil {
		c.dirty.Store(true)
		return fmt.Errorf("encoding probe cache: %w", err)
	}
	if err := writeFileAtomic(path, data, 0o640); err != nil {
		c.dirty.Store(true)
		return err
	}
	return nil
}

func (c *Cache) saveIfDirty() error {
	if !c.dirty.Load() {
		return nil
	}
	return c.Save()
}

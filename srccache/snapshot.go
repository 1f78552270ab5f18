package srccache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/snapshot"
)

// snapshotVersion is the format Save writes. Load also reads version 1 of
// the source cache (the same records, MTA-STS and DANE only) and the old
// probe cache format (upgradeProbeCacheV1).
const snapshotVersion = 2

// staleTempAge is how old a temporary file of Save must be before a later
// process removes it: far longer than any Save takes.
const staleTempAge = 10 * time.Minute

type snapshotFile struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Records []*Record `json:"records"`
}

// LoadReport says what Load found.
type LoadReport struct {
	Records  int               // restored
	Upgraded string            // the older format converted, "" if none
	Corrupt  *snapshot.Corrupt // the damage found (file kept aside, what parsed salvaged), or nil
}

// Save writes every record to Options.Path atomically (temporary file in
// the same directory, fsync, rename, fsync of the directory). Reads and
// writes go on meanwhile; the snapshot is one read transaction's view.
// The first Save over a file of an older format keeps that file as
// PATH.v1, for a downgrade.
func (c *Cache) Save() error {
	if c.opts.Path == "" || c.opts.ReadOnly {
		return nil
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.changed.Store(false)
	c.cleanOnce.Do(func() { removeStaleTemps(c.opts.Path) })
	b, err := json.Marshal(snapshotFile{Version: snapshotVersion, Saved: time.Now().UTC(), Records: c.All()})
	if err != nil {
		c.changed.Store(true)
		return fmt.Errorf("srccache: encode snapshot: %w", err)
	}
	if c.upgraded != "" {
		keepOld(c.opts.Path)
		c.upgraded = ""
	}
	if err := snapshot.WriteAtomic(c.opts.Path, b, 0o640); err != nil {
		c.changed.Store(true)
		return fmt.Errorf("srccache: save: %w", err)
	}
	return nil
}

// keepOld keeps the file at path, of an older format, as path.v1 (for a
// downgrade) unless that exists: by a link, so that the old file stays at
// path until the new one replaces it and a failed write loses nothing;
// by a copy where links are not supported. If neither works the save goes
// on: the new file holds every record the old one had.
func keepOld(path string) {
	old := path + ".v1"
	if _, err := os.Lstat(old); !errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err := os.Link(path, old); err == nil || errors.Is(err, fs.ErrNotExist) {
		return
	}
	if b, err := os.ReadFile(path); err == nil {
		_ = snapshot.WriteAtomic(old, b, 0o640)
	}
}

// removeStaleTemps removes the temporary files a Save killed before its
// rename left next to path: a crash loop would otherwise fill the
// directory with them.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), snapshot.TempPrefix(path)) {
			continue
		}
		m := filepath.Join(dir, de.Name())
		if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() && time.Since(fi.ModTime()) > staleTempAge {
			_ = os.Remove(m)
		}
	}
}

// keptExpired reports whether r, expired, is still kept: a DANE record
// the scheduler keeps past its expiry (its Refresh ahead), whose word that
// TLSA records exist makes a failing first lookup defer.
func keptExpired(r *Record, now time.Time) bool {
	return r.Kind == KindDANE && r.Refresh.After(now)
}

// Load reads the snapshot at Options.Path into the cache, skipping records
// that have expired by now (but keptExpired ones). OnChange does not hear of the records restored
// (they were changes when fetched). A missing file is no error. A damaged
// file (not complete JSON, an unknown version, invalid records) is kept
// aside as PATH.corrupt-<unix time>, what parses is restored and the report
// says so (the next Save writes the salvaged records). Only an unreadable
// file is an error.
func (c *Cache) Load(now time.Time) (LoadReport, error) {
	var rep LoadReport
	if c.opts.Path == "" {
		return rep, nil
	}
	data, err := os.ReadFile(c.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("srccache: load: %w", err)
	}
	recs, upgraded, lost, problem := decodeSnapshot(data, now)
	for _, r := range recs {
		if !r.Valid(now) && !keptExpired(r, now) {
			continue
		}
		if err := c.put(r, false); err != nil {
			return rep, err
		}
		rep.Records++
	}
	c.changed.Store(false)
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if upgraded != "" {
		rep.Upgraded, c.upgraded = upgraded, upgraded
		c.changed.Store(true)
	}
	if problem != nil {
		cr := &snapshot.Corrupt{Path: c.opts.Path, Err: problem, Salvaged: len(recs), Lost: lost, What: "cache"}
		if !c.opts.ReadOnly {
			if cr.Aside, err = snapshot.Quarantine(c.opts.Path, now); err != nil {
				cr.Aside = ""
			}
		}
		c.upgraded = "" // the original is kept aside already
		c.changed.Store(true)
		rep.Corrupt = cr
	}
	return rep, nil
}

// Import merges the records of another snapshot file (a source cache of an
// older version kept in a file of its own) into the cache: a record is
// taken unless the cache holds one of its kind and key fetched later. It
// returns how many were taken. A missing file is no error.
func (c *Cache) Import(path string, now time.Time) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("srccache: import: %w", err)
	}
	recs, _, _, problem := decodeSnapshot(data, now)
	n := 0
	for _, r := range recs {
		if !r.Valid(now) {
			continue
		}
		if old := c.Get(r.Kind, r.Domain); old != nil && !r.Fetched.After(old.Fetched) {
			continue
		}
		if err := c.put(r, false); err != nil {
			return n, err
		}
		n++
	}
	if problem != nil {
		return n, fmt.Errorf("srccache: import %s: %w", path, problem)
	}
	return n, nil
}

// header is a snapshot's top level, each record left to decode on its own
// so that one bad record costs that record only.
type header struct {
	Version int               `json:"version"`
	Records []json.RawMessage `json:"records"`
	Entries []json.RawMessage `json:"entries"` // the old probe cache
	Learned []json.RawMessage `json:"learned"` // the old probe cache
}

// decodeSnapshot decodes a snapshot of any format Load reads. It returns
// the valid records, the older format converted ("" if none), how many
// records were lost (-1: unknown) and what was wrong (nil if nothing).
func decodeSnapshot(data []byte, now time.Time) (recs []*Record, upgraded string, lost int, problem error) {
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		problem, lost = fmt.Errorf("not a complete JSON file: %w", err), -1
		sv := snapshot.SalvageArrays(data, "records", "entries", "learned")
		h = header{Version: snapshotVersion, Records: sv["records"], Entries: sv["entries"], Learned: sv["learned"]}
		if len(h.Records) == 0 && (len(h.Entries) > 0 || len(h.Learned) > 0) {
			h.Version = 1
		}
	}
	if h.Records == nil && (h.Entries != nil || h.Learned != nil) && h.Version == 1 {
		recs, skipped, err := upgradeProbeCacheV1(data, now)
		if problem == nil && err != nil {
			problem, lost = err, -1
		}
		if skipped > 0 {
			if problem == nil {
				problem = fmt.Errorf("%d invalid record(s)", skipped)
			}
			if lost >= 0 {
				lost += skipped
			}
		}
		return recs, "probe cache version 1", lost, problem
	}
	switch h.Version {
	case 1:
		upgraded = "source cache version 1"
	case snapshotVersion:
	default:
		return nil, "", len(h.Records), fmt.Errorf("unknown version %d", h.Version)
	}
	skipped := 0
	for _, raw := range h.Records {
		r := new(Record)
		if err := json.Unmarshal(raw, r); err != nil || validRecord(r) != nil {
			skipped++
			continue
		}
		recs = append(recs, r)
	}
	if skipped > 0 {
		if problem == nil {
			problem = fmt.Errorf("%d invalid record(s)", skipped)
		}
		if lost >= 0 {
			lost += skipped
		}
	}
	return recs, upgraded, lost, problem
}

// validRecord checks a record read from a snapshot: a known kind, a key,
// and the payload its kind needs.
func validRecord(r *Record) error {
	if r.Domain == "" {
		return errors.New("record without a key")
	}
	switch r.Kind {
	case KindMTASTS:
		if r.MTASTS == nil {
			return errors.New("mta-sts record without its MTA-STS part")
		}
	case KindDANE, KindWatch:
	case KindProbe, KindLearned:
		return validProbeRecord(r)
	default:
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	return nil
}

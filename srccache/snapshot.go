package srccache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// snapshotVersion is the format of the snapshot file; a file of another
// version is ignored (logged by the caller), never misread.
const snapshotVersion = 1

type snapshot struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Records []*Record `json:"records"`
}

// Save writes every record to Options.Path atomically: a temporary file
// in the same directory, fsynced, renamed over the old one. Reads and
// writes go on meanwhile; the snapshot is one read transaction's view.
func (c *Cache) Save() error {
	if c.opts.Path == "" {
		return nil
	}
	b, err := json.Marshal(snapshot{Version: snapshotVersion, Saved: time.Now().UTC(), Records: c.All()})
	if err != nil {
		return fmt.Errorf("srccache: encode snapshot: %w", err)
	}
	dir := filepath.Dir(c.opts.Path)
	f, err := os.CreateTemp(dir, filepath.Base(c.opts.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("srccache: save: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename it no longer exists
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("srccache: save: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("srccache: save: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("srccache: save: %w", err)
	}
	if err := os.Rename(tmp, c.opts.Path); err != nil {
		return fmt.Errorf("srccache: save: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Load reads the snapshot at Options.Path into the cache, skipping
// records that have expired by now. OnChange does not hear of the
// records restored (they were changes when fetched). A missing file is
// not an error; a corrupt one is, and leaves the cache as it was.
func (c *Cache) Load(now time.Time) (int, error) {
	if c.opts.Path == "" {
		return 0, nil
	}
	b, err := os.ReadFile(c.opts.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("srccache: load: %w", err)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return 0, fmt.Errorf("srccache: load %s: %w", c.opts.Path, err)
	}
	if s.Version != snapshotVersion {
		return 0, fmt.Errorf("srccache: load %s: snapshot version %d, want %d", c.opts.Path, s.Version, snapshotVersion)
	}
	n := 0
	for _, r := range s.Records {
		if r == nil || r.Kind == "" || r.Domain == "" || !r.Valid(now) {
			continue
		}
		if err := c.put(r, false); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

package outbound

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/maillog"
)

// stateVersion is the version of the state file's format.
const stateVersion = 1

// state is the file a Tracker is saved to: counts, stuck domains and the
// position in the log they reflect, written together so that a restart
// resumes exactly where the counts end.
type state struct {
	Version  int                           `json:"version"`
	Source   string                        `json:"source"`
	Position logfollow.Position            `json:"position"`
	Days     map[string]map[string]*Counts `json:"days"`
	Stuck    map[string]*stuck             `json:"stuck"`
	Reported string                        `json:"tlsrpt_reported,omitempty"`
	// Sessions are the smtp processes' open TLS sessions at Position.
	Sessions []maillog.Pending `json:"sessions,omitempty"`
}

// Save writes the tracker's state to path atomically (temporary file,
// fsync, rename), if anything changed since the last Save.
func (t *Tracker) Save(path string) error {
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(state{Version: stateVersion, Source: t.source, Position: t.pos, Days: t.days, Stuck: t.stuck,
		Reported: t.reported, Sessions: t.corr.Pending()})
	t.dirty = false
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("outbound state: %w", err)
	}
	if err := writeAtomic(path, b); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return err
	}
	return nil
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("outbound state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("outbound state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("outbound state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("outbound state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("outbound state: %w", err)
	}
	return nil
}

// Load reads the state saved at path. A missing file is no error (first
// run). A file that cannot be read back is an error; the tracker stays
// empty then, and the caller starts the log at its end.
func (t *Tracker) Load(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("outbound state: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("outbound state %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return fmt.Errorf("outbound state %s: version %d, want %d", path, s.Version, stateVersion)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.Days != nil {
		t.days = s.Days
	}
	if s.Stuck != nil {
		for d, st := range s.Stuck {
			if st == nil || st.Msgs == nil {
				delete(s.Stuck, d)
			}
		}
		t.stuck = s.Stuck
	}
	t.pos, t.source, t.reported = s.Position, s.Source, s.Reported
	t.corr = maillog.NewCorrelator()
	t.corr.Restore(s.Sessions)
	return nil
}

// Resume returns the position to resume the log named source ("journal"
// or a file's path) from, or nil to start at its end: on the first run,
// and when the saved position belongs to another log. It also records
// source for the next Save.
func (t *Tracker) Resume(source string) *logfollow.Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.source
	t.source = source
	if prev != source || (t.pos.Inode == 0 && t.pos.Cursor == "") {
		t.corr = maillog.NewCorrelator() // sessions of another log
		return nil
	}
	p := t.pos
	return &p
}

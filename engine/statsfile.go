package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	statefile "github.com/tlspolicyd/tlspolicyd/internal/snapshot"
)

// The inbound counters are kept in a file beside the event log, so that
// the report's inbound columns survive a restart as its events do.

// StatsPath returns the file the inbound counters are kept in beside the
// event log at eventLog: events.jsonl → events.inbound.json ("" for "").
func StatsPath(eventLog string) string {
	if eventLog == "" {
		return ""
	}
	return strings.TrimSuffix(eventLog, filepath.Ext(eventLog)) + ".inbound.json"
}

const statsFileVersion = 1

type statsFile struct {
	Version int           `json:"version"`
	Since   time.Time     `json:"since"` // when counting began
	Saved   time.Time     `json:"saved"`
	Domains []DomainStats `json:"domains"`
}

// SaveFile writes the counters, counted since since, to path atomically.
func (s *Stats) SaveFile(path string, since, now time.Time) error {
	data, err := json.Marshal(statsFile{Version: statsFileVersion, Since: since.UTC(), Saved: now.UTC(), Domains: s.Snapshot()})
	if err != nil {
		return fmt.Errorf("encoding inbound counters: %w", err)
	}
	return statefile.WriteAtomic(path, data, 0o640)
}

// LoadFile adds the counters saved at path to s and returns when their
// counting began; without a file, it is now. A damaged file is kept aside
// (statefile.Quarantine) and counting starts afresh at now.
func (s *Stats) LoadFile(path string, now time.Time, log *slog.Logger) time.Time {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return now
	}
	if err != nil {
		log.Warn("inbound counters not restored", "path", path, "error", err)
		return now
	}
	var f statsFile
	err = json.Unmarshal(data, &f)
	if err == nil && (f.Version != statsFileVersion || f.Since.IsZero()) {
		err = fmt.Errorf("unknown version %d or no start time", f.Version)
	}
	if err != nil {
		aside, qerr := statefile.Quarantine(path, now)
		log.Error("inbound counters file damaged: counting starts afresh", "path", path, "aside", aside, "error", err, "quarantine_error", qerr)
		return now
	}
	s.restore(f.Domains)
	log.Info("inbound counters restored", "path", path, "since", f.Since, "domains", len(f.Domains))
	return f.Since
}

// restore adds saved counters to s, within its bound on domains.
func (s *Stats) restore(ds []DomainStats) {
	for _, d := range ds {
		key := string(appendSanitized(nil, d.Domain))
		sh := &s.domains[maphash.String(s.seed, key)%statsShards]
		sh.mu.Lock()
		c := sh.domains[key]
		if c == nil && key != otherDomain && s.ndoms.Add(1) > int64(s.max) {
			s.ndoms.Add(-1)
			sh.mu.Unlock()
			key = otherDomain
			sh = &s.domains[maphash.String(s.seed, key)%statsShards]
			sh.mu.Lock()
			c = sh.domains[key]
		}
		if c == nil {
			c = &domainCounts{domain: key}
			sh.domains[key] = c
		}
		c.withTLS += d.WithTLS
		c.withoutTLS += d.WithoutTLS
	next:
		for v, n := range d.Versions {
			v = string(appendSanitized(nil, v))
			for i := range c.versions {
				if c.versions[i].version == v {
					c.versions[i].n += n
					continue next
				}
			}
			c.versions = append(c.versions, versionCount{v, n})
		}
		sh.mu.Unlock()
	}
}

// RunSaver saves the counters to path every interval until ctx ends (the
// daemon saves once more after its servers have stopped).
func (s *Stats) RunSaver(ctx context.Context, path string, since time.Time, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if err := s.SaveFile(path, since, now); err != nil {
				log.Warn("saving inbound counters", "path", path, "error", err)
			}
		}
	}
}

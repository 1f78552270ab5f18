package main

import (
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// newCache opens the daemon's one cache of what it learns about
// destinations and makes its one refresh scheduler; the sources, the probe
// cache and the monitor register their kinds with it, and loadCache
// restores the snapshot once the probe cache listens. Evictions of DANE
// and MTA-STS policies still in force are events.
func (d *daemon) newCache() error {
	cfg, log := d.cfg, d.log.With("component", "cache")
	c, err := srccache.New(srccache.Options{Path: cachePath(cfg), OnChange: d.fl.sourceChanged, Max: cacheBounds(cfg)})
	if err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	}
	for _, k := range []srccache.Kind{srccache.KindMTASTS, srccache.KindDANE} {
		c.OnEvict(k, func(r *srccache.Record) {
			log.Info("cache full: record evicted", "kind", r.Kind, "domain", r.Domain, "expires", r.Expires)
			if ev, ok := sourceEvictedEvent(r, time.Now()); ok {
				d.ring.Publish(ev)
			}
		})
	}
	d.srcCache = c
	d.sched = srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: log})
	d.metrics.Cache(c, d.sched)
	return nil
}

// loadCache restores the cache's snapshot (an old probe cache file is
// upgraded in place) and merges a DANE/MTA-STS snapshot of earlier
// versions kept in a file of its own; the probe cache hears the report
// (a damaged file is an event and a metric).
func (d *daemon) loadCache() {
	cfg, log, c := d.cfg, d.log.With("component", "cache"), d.srcCache
	path := cachePath(cfg)
	rep, err := c.Load(time.Now())
	switch {
	case err != nil:
		log.Warn("cache not restored (ignored; what it held is fetched and probed again)", "path", path, "error", err)
	case rep.Corrupt != nil:
		log.Error("cache file damaged", "path", path, "aside", rep.Corrupt.Aside, "salvaged", rep.Corrupt.Salvaged, "error", rep.Corrupt.Err)
	case rep.Records > 0 || rep.Upgraded != "":
		log.Info("cache restored", "path", path, "records", rep.Records, "upgraded_from", rep.Upgraded)
	}
	if old := legacySourcesPath(cfg); old != "" {
		if n, err := c.Import(old, time.Now()); err != nil {
			log.Warn("source cache of an earlier version not read whole", "path", old, "imported", n, "error", err)
		} else if n > 0 {
			log.Info("source cache of an earlier version merged", "path", old, "records", n)
		}
	}
	d.cache.Loaded(rep)
}

// readCache returns the daemon's cache as its snapshot holds it, read
// only (a command beside the daemon: query, tlsrpt), with its report;
// empty when there is no snapshot or it cannot be read.
func readCache(cfg config.Config) (*srccache.Cache, srccache.LoadReport) {
	c, err := srccache.New(srccache.Options{Path: cachePath(cfg), ReadOnly: true, Max: cacheBounds(cfg)})
	if err != nil {
		return nil, srccache.LoadReport{}
	}
	rep, _ := c.Load(time.Now())
	if old := legacySourcesPath(cfg); old != "" {
		_, _ = c.Import(old, time.Now())
	}
	return c, rep
}

// cachePath is the daemon's cache file: probe.cache (the probe cache file
// of earlier versions, upgraded in place), else sources.cache; "" keeps
// the cache in memory only.
func cachePath(cfg config.Config) string {
	if cfg.Probe.Cache != "" {
		return cfg.Probe.Cache
	}
	return cfg.Sources.Cache
}

// legacySourcesPath is where earlier versions kept the DANE/MTA-STS cache
// apart (sources.cache, else sources.json next to the probe cache): its
// records are merged into the cache at start. "" if it is the cache file.
func legacySourcesPath(cfg config.Config) string {
	old := cfg.Sources.Cache
	if old == "" && cfg.Probe.Cache != "" {
		old = filepath.Join(filepath.Dir(cfg.Probe.Cache), "sources.json")
	}
	if old == cachePath(cfg) {
		return ""
	}
	return old
}

// cacheBounds is each kind's bound from the configuration.
func cacheBounds(cfg config.Config) map[srccache.Kind]int {
	return map[srccache.Kind]int{
		srccache.KindDANE: cfg.Sources.MaxRecords, srccache.KindMTASTS: cfg.Sources.MaxRecords,
		srccache.KindProbe: cfg.Probe.MaxEntries, srccache.KindLearned: cfg.Probe.MaxEntries,
	}
}

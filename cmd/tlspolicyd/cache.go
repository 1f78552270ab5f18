package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// newCache opens the daemon's one cache of what it learns about
// destinations, restores its snapshot, and makes its one refresh
// scheduler; the sources, the probe cache and the monitor register their
// kinds with it. Evictions of DANE and MTA-STS policies still in force are
// events.
func (d *daemon) newCache() error {
	cfg, log := d.cfg, d.log.With("component", "cache")
	path := sourcesCachePath(cfg)
	c, err := srccache.New(srccache.Options{Path: path, OnChange: d.fl.sourceChanged, Max: cacheBounds(cfg)})
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
	rep, err := c.Load(time.Now())
	switch {
	case err != nil:
		log.Warn("cache not restored (ignored; what it held is fetched and probed again)", "path", path, "error", err)
	case rep.Corrupt != nil:
		log.Error("cache file damaged", "path", path, "aside", rep.Corrupt.Aside, "salvaged", rep.Corrupt.Salvaged, "error", rep.Corrupt.Err)
	case rep.Records > 0 || rep.Upgraded != "":
		log.Info("cache restored", "path", path, "records", rep.Records, "upgraded_from", rep.Upgraded)
	}
	d.srcCache = c
	d.sched = srccache.NewScheduler(c, srccache.SchedulerOptions{Logger: log})
	return nil
}

// readCache returns the daemon's cache as its snapshot holds it, read
// only (a command beside the daemon: query, tlsrpt); empty when there is
// no snapshot or it cannot be read.
func readCache(cfg config.Config) *srccache.Cache {
	c, err := srccache.New(srccache.Options{Path: sourcesCachePath(cfg), ReadOnly: true})
	if err != nil {
		return nil
	}
	_, _ = c.Load(time.Now())
	return c
}

// cacheBounds is each kind's bound from the configuration.
func cacheBounds(cfg config.Config) map[srccache.Kind]int {
	return map[srccache.Kind]int{
		srccache.KindDANE: cfg.Sources.MaxRecords, srccache.KindMTASTS: cfg.Sources.MaxRecords,
		srccache.KindProbe: cfg.Probe.MaxEntries, srccache.KindLearned: cfg.Probe.MaxEntries,
	}
}

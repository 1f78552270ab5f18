package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/logbuf"
	"github.com/tlspolicyd/tlspolicyd/internal/safetext"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// daemon is `tlspolicyd serve`: newDaemon builds its parts from the
// configuration and loads the table; Run serves until its context ends;
// close releases what newDaemon opened.
type daemon struct {
	cfg     config.Config
	started time.Time
	hup     chan os.Signal
	out     *logbuf.Writer
	log     *slog.Logger
	nofile  uint64      // the open-file limit, 0 if unknown
	mode    os.FileMode // of unix: sockets
	evlog   *events.Log // nil without an event log

	ring    *events.Ring
	metrics *web.Metrics
	fl      *fleetLink
	eng     *engine.Engine
	// Inbound counters, kept beside the event log ("" without one).
	statsPath    string
	inboundSince time.Time
	smHandler    socketmap.Handler
	pdHandler    policyd.Handler

	health   *engine.ProbeHealth
	probe    probe.Func          // the prober, counted: see probeFunc
	cache    *srccache.Probes    // probe results and learned policies, in srcCache
	srcCache *srccache.Cache     // every record the daemon learns about destinations
	sched    *srccache.Scheduler // the one refresh scheduler of srcCache
	rl       *engine.Reloader
	src      *sources.Manager // nil without sources
	mon      *engine.Monitor
	ml       *maillogReader
}

// serve runs the daemon until ctx ends or a server fails.
func serve(ctx context.Context, cfg config.Config, logw io.Writer) error {
	d, err := newDaemon(cfg, logw)
	if err != nil {
		return err
	}
	defer d.close()
	return d.Run(ctx)
}

// newDaemon builds the daemon from cfg, logging to logw, and loads the
// policy table: an invalid table is an error, as is a bad configuration.
func newDaemon(cfg config.Config, logw io.Writer) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, started: time.Now()}
	// SIGHUP is caught from the very start: during a long table load a
	// `systemctl reload` (ExecReload=kill -HUP) would otherwise kill the
	// daemon, which Restart=on-failure counts as a clean exit. The one
	// buffered signal is acted on once the daemon serves.
	d.hup = make(chan os.Signal, 1)
	signal.Notify(d.hup, syscall.SIGHUP)
	// Log lines are queued and written in batches by one goroutine
	// (internal/logbuf): a blocked request's log line costs the request a
	// copy, not a write(2), and a stuck log output drops lines (counted,
	// reported) instead of stalling lookups. Closed last, after every
	// other shutdown step has logged.
	d.out = logbuf.New(logw, logbuf.Options{OnDrop: func(lines uint64) {
		d.log.Warn("log output too slow: log lines dropped (the events are kept in the event log and metrics)", "lines", lines)
	}})
	d.log = newLogger(d.out, cfg.Log.Format, cfg.Log.Level)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if n, nerr := raiseNofile(); nerr != nil {
		d.log.Warn("cannot read or raise the open-file limit (RLIMIT_NOFILE)", "error", nerr)
	} else {
		d.nofile = n
	}
	if d.mode, err = cfg.FileMode(); err != nil {
		return nil, cli.Exit(err.Error(), 2)
	}
	d.openEvents()
	if err := d.newEngine(); err != nil {
		return nil, err
	}
	if err := d.newCache(); err != nil {
		return nil, err
	}
	if err := d.newProbing(); err != nil {
		return nil, err
	}
	if err := d.newSources(); err != nil {
		return nil, err
	}
	d.mon = &engine.Monitor{Engine: d.eng, Probe: d.probeFunc(), Cache: d.cache, Interval: cfg.Probe.Interval,
		Workers: cfg.Probe.MonitorWorkers, MaxPerMinute: cfg.Probe.MaxPerMinute, Logger: d.log.With("component", "monitor")}
	// The monitor's schedule is the cache's watch records, run by the one
	// scheduler; Sync follows the table loaded and the MTA-STS policies
	// restored (and each reload: OnReload).
	d.mon.Register(d.sched, d.srcCache)
	d.mon.Sync()
	d.eng.OnTesting = d.mon.Kick
	// Postfix's log (maillog): the outbound report, stuck-mail alerts, TLS-RPT.
	if err := checkTLSRPT(cfg); err != nil {
		return nil, cli.Exit("tlspolicyd: "+err.Error(), 2)
	}
	d.ml = newMaillog(cfg, d.log, d.ring, d.eng, d.metrics)
	return d, nil
}

// close releases what newDaemon opened, the log output last.
func (d *daemon) close() {
	if d.evlog != nil {
		d.evlog.Close()
	}
	d.out.Close()
	signal.Stop(d.hup)
}

// openEvents makes the event ring (status page, report, metrics) and
// persists it to an append-only log whose tail is read back, so a restart
// loses nothing. The event log's queue is no longer than the ring: the
// report counts the log's files plus the ring's events not yet written, so
// an event waiting in a longer queue could be in neither.
func (d *daemon) openEvents() {
	const ringSize = 1000
	cfg, log := d.cfg, d.log
	d.ring = events.NewRing(ringSize)
	d.metrics = web.NewMetrics()
	if cfg.Log.Events == "" {
		return
	}
	evlog, err := events.OpenLog(cfg.Log.Events, events.LogOptions{
		MaxSize: int64(cfg.Log.EventsMaxMB) << 20, Keep: cfg.Log.EventsKeep, Queue: ringSize, Logger: log})
	if err != nil {
		log.Warn("event log disabled: events are kept in memory only", "path", cfg.Log.Events, "error", err)
		return
	}
	if err := evlog.Attach(d.ring); err != nil {
		log.Warn("event log: earlier events not restored", "path", cfg.Log.Events, "error", err)
	}
	d.evlog = evlog
	d.metrics.CounterFunc("tlspolicyd_event_log_dropped_total",
		"Events the event log dropped because its queue was full (the output too slow); they are still in the ring, metrics and alerts.",
		evlog.Dropped)
	d.metrics.CounterFunc("tlspolicyd_event_log_write_errors_total",
		"Events lost because a write of the event log (or its reopen after rotation) failed.", evlog.WriteErrors)
}

// newEngine makes the fleet link and the policy engine with its
// handlers.
func (d *daemon) newEngine() error {
	var err error
	if d.fl, err = newFleet(d.cfg, d.log, d.ring); err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	}
	if d.fl != nil {
		d.metrics.Fleet(d.fl)
	}
	d.eng = engine.New(nil, nil, d.ring, d.log)
	// Inbound counters are kept beside the event log, so the report's
	// inbound columns survive a restart as its events do.
	d.statsPath, d.inboundSince = engine.StatsPath(d.cfg.Log.Events), time.Now()
	if d.statsPath != "" {
		d.inboundSince = d.eng.Stats().LoadFile(d.statsPath, d.inboundSince, d.log)
	}
	d.smHandler, d.pdHandler, err = withFaults(d.eng, d.log) // the engine itself, except in test builds
	if err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	}
	return nil
}

// newProbing makes the prober's health watch and its persistent cache
// (learned policies, status page), and loads the table through the
// reloader, which keeps the cache's learning settings the table's.
func (d *daemon) newProbing() error {
	cfg, log := d.cfg, d.log
	// health notices a prober whose every probe fails temporarily (DNS or
	// network down): an event, the status page's banner, a metric.
	d.health = &engine.ProbeHealth{Events: d.ring, Logger: log.With("component", "prober")}
	d.metrics.GaugeFunc("tlspolicyd_prober_blind", "1 while every recent probe failed temporarily (DNS or network down): enforced entries go unchecked.",
		func() float64 {
			if blind, _, _ := d.health.Blind(); blind {
				return 1
			}
			return 0
		})
	// The cache's learn_max_age is the table's: the reloader sets it on
	// every table swapped in, the first one included.
	d.cache = srccache.NewProbes(d.srcCache, d.sched, probesOptions(log, d.ring, d.probeFunc(), cfg.Probe.TTL))
	d.fl.shareProbes(d.cache)
	d.rl = &engine.Reloader{Path: cfg.Table, Engine: d.eng, Logger: log,
		OnReload: func(err error) {
			d.metrics.Reload(err)
			if err != nil {
				d.ring.Publish(events.Event{Kind: events.ReloadFailed, Reason: safetext.FirstLine(err.Error()), Source: cfg.Table})
				return
			}
			// Called after the swap, under the reloader's lock: Store is
			// the table just loaded, and reloads apply in order.
			d.cache.SetLearnMaxAge(d.eng.Store().Table().Defaults.LearnMaxAge)
			d.cache.SetLearning(d.eng.Store().Table().Defaults.Learn != store.LearnOff)
			if d.mon != nil { // nil at the first load: newDaemon syncs it
				d.mon.Sync()
			}
		}}
	if err := d.rl.Reload(); err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd: cannot start: policy table %s is invalid:\n%v", cfg.Table, err), 1)
	}
	// Restored once the table's learn_max_age is known and the probe
	// cache listens for evictions.
	d.loadCache()
	d.metrics.CounterFunc("tlspolicyd_probe_cache_corrupt_total",
		"Times the cache file was found damaged at start (kept aside as FILE.corrupt-<unix time>, what parsed salvaged).", d.cache.Corrupted)
	d.eng.SetLearner(d.cache)
	return nil
}

// probeFunc probes one target with the daemon's prober, counting the
// verdict and telling the health watch. The prober is made once.
func (d *daemon) probeFunc() probe.Func {
	if d.probe == nil {
		prober := newProber(d.cfg, d.log)
		d.probe = func(ctx context.Context, target string) (*probe.Result, error) {
			r, err := prober.Probe(ctx, target)
			if r != nil {
				d.metrics.ProbeVerdict(r.Status)
				d.health.Observe(r)
			}
			return r, err
		}
	}
	return d.probe
}

// newSources makes the DANE and MTA-STS sources on the daemon's cache, if
// configured; the monitor follows each MTA-STS policy fetched.
func (d *daemon) newSources() error {
	log := d.log
	src, err := newSources(d.cfg, log.With("component", "sources"), d.srcCache)
	if err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	}
	if src == nil {
		return nil
	}
	d.src = src
	d.eng.SetSources(src)
	src.Register(d.sched)
	src.SetOnPolicy(func(r *srccache.Record) { d.mon.SyncSource(r) })
	d.fl.shareSources(src.Cache())
	return nil
}

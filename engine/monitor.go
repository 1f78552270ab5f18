package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Defaults and limits of the Monitor's schedule.
const (
	// DefaultMonitorWorkers is the default of Monitor.Workers.
	DefaultMonitorWorkers = 4
	// DefaultMonitorInterval is the default of Monitor.Interval.
	DefaultMonitorInterval = time.Hour
	// maxGap is the longest wait between the first checks of keys new to
	// the monitor, so that a small table is checked within minutes of
	// start, not over an hour.
	maxGap = 10 * time.Second
	// probeWait bounds one monitor probe, including its wait for a turn
	// under the prober's per-minute cap: a probe whose turn would come
	// later is not started (ErrRateLimited) and is retried within a
	// minute.
	probeWait = 10 * time.Minute
	// spanShare is the share of Interval the first checks of many new
	// keys are spread over.
	spanShare = 0.9
	// watchKeep is how long a watch record is kept after its last check
	// (Expires): a daemon stopped longer forgets it and checks the key as
	// new. Over the kind's bound, the records checked longest ago go
	// first (their keys wait for a new record, see evicted); records of
	// keys never checked expire later than any checked one.
	watchKeep = 7 * 24 * time.Hour
)

// ResultStore keeps the probe results the monitor gets (the probe-result
// cache, for the status page and learned policies).
type ResultStore interface{ Put(*probe.Result) }

// Monitor re-probes, on a schedule, every outbound entry that enforces TLS
// or is in testing, the domains of recipients: and senders: entries (see
// addressWatches) and every domain whose cached MTA-STS policy is in
// enforce or testing mode, so the postmaster hears that enforcement blocks
// (or would block) mail while it is still queued, not after it bounced.
//
// The schedule is the source cache's: one KindWatch record per monitored
// key (see srccache.Watch), whose Refresh is its next check, run by the
// one srccache.Scheduler (Register). A key new to the monitor is checked
// soon (testing ones first, spread at most 10 s apart and within
// MaxPerMinute, so that a small table is checked within minutes and a
// large one is not probed at once), then every Interval ±10%; the
// scheduler takes the most overdue first, so a table too large for the
// rate is covered in turn. Sync follows the table and the MTA-STS
// policies; Kick asks for an early check; CheckAll probes everything now,
// without the scheduler (`check --probe`).
type Monitor struct {
	Engine *Engine
	Probe  probe.Func
	Cache  ResultStore // results are stored here too (may be nil)
	// Interval is the time between two checks of a key (default 1h,
	// jittered by ±10%).
	Interval time.Duration
	// Workers is how many probes the monitor has in flight at most
	// (default DefaultMonitorWorkers). The prober's own Concurrency bounds
	// the connections of all its callers.
	Workers int
	// MaxPerMinute caps the monitor's probe starts a minute: set it to the
	// prober's probe.Config.MaxPerMinute so that the monitor keeps to the
	// cap instead of queueing for it (0 or negative: no cap of its own).
	// A table too large to probe within an interval at this rate is probed
	// in turn, least recently probed first; the summary log line says how
	// many checks are behind.
	MaxPerMinute int
	// OnInconclusive, if set, is called (concurrently) for every entry
	// whose probe said nothing about its TLS: the probe failed or was not
	// started (rate limit), or the destination was unreachable, failed
	// temporarily or accepts no mail (null MX). Judge yields no finding
	// then; `check --probe` reports these, so that a CI gate does not pass
	// an entry it could not probe.
	OnInconclusive func(e *store.Entry, why string)
	Logger         *slog.Logger
	Now            func() time.Time

	firstDelay   time.Duration // before the first check of a new key (default 5s; tests shorten it)
	maxGap       time.Duration // maxGap (tests shorten it)
	summaryEvery time.Duration // between summary log lines (default Interval)

	once    sync.Once
	watches *srccache.Cache     // nil until Register
	sched   *srccache.Scheduler // nil until Register
	mu      sync.Mutex
	addr    map[string]watch // the recipients:/senders: watches of the table last synced
	synced  bool             // Sync ran once: later ones keep overdue records' places
	backlog []*store.Entry   // entries new to the monitor still without a record (see newWindow)
	requeue requeue          // keys whose records were evicted, by next check
	// requeued is each requeued key's latest evicted record: the others
	// in requeue are stale.
	requeued map[string]*srccache.Record
	fresh    map[string]bool // keys whose records await their first check (at most newWindow)
	slots    slots           // the first checks' times since the last Sync
	st       monitorStats    // since the last summary
}

func (m *Monitor) init() {
	m.once.Do(func() {
		if m.Interval <= 0 {
			m.Interval = DefaultMonitorInterval
		}
		if m.Workers <= 0 {
			m.Workers = DefaultMonitorWorkers
		}
		if m.firstDelay <= 0 {
			m.firstDelay = 5 * time.Second
		}
		if m.maxGap <= 0 {
			m.maxGap = maxGap
		}
		if m.summaryEvery <= 0 {
			m.summaryEvery = m.Interval
		}
		if m.Logger == nil {
			m.Logger = slog.Default()
		}
		if m.Now == nil {
			m.Now = time.Now
		}
	})
}

// Register makes the monitor's schedule the KindWatch records of c, run
// by s (at most Workers probes in flight, MaxPerMinute starts a minute).
// Call it before s.Run, then Sync.
func (m *Monitor) Register(s *srccache.Scheduler, c *srccache.Cache) {
	m.init()
	m.watches, m.sched = c, s
	m.st.since = m.Now()
	c.OnEvict(srccache.KindWatch, m.evicted)
	s.Tick(m.topUp) // evicted entries come due without a check to trigger topUp
	s.Handle(srccache.KindWatch, srccache.KindOptions{Workers: m.Workers, PerMinute: max(m.MaxPerMinute, 0),
		Lease: probeWait + time.Minute}, m.handle)
}

// Kick asks for a probe of a testing or enforced entry that a lookup just
// used, unless it was probed within the interval. It never blocks: the
// scheduler takes the key before the due ones.
func (m *Monitor) Kick(e *store.Entry) {
	if m.sched == nil || !probeable(e) {
		return
	}
	key := outboundKey(e.Key)
	if m.recent(m.watches.Get(srccache.KindWatch, key)) {
		return
	}
	m.sched.Queue(srccache.KindWatch, key)
}

// recent reports whether r's key was probed within the interval.
func (m *Monitor) recent(r *srccache.Record) bool {
	return r != nil && r.Watch != nil && !r.Watch.Probed.IsZero() && m.Now().Sub(r.Watch.Probed) < m.Interval
}

// handle is the scheduler's KindWatch handler: it probes and judges the
// key's destination as the table (or MTA-STS policy) now says, publishes
// the findings, and writes the record with its next check. A key no
// longer monitored loses its record.
func (m *Monitor) handle(ctx context.Context, key string, r *srccache.Record) {
	w, ok := m.resolve(key)
	if !ok {
		_ = m.watches.Delete(srccache.KindWatch, key)
		m.checked(key)
		return
	}
	now := m.Now()
	if r != nil && r.Refresh.After(now) && m.recent(r) {
		// Queued by a kick that raced a check: not due, probed within
		// the interval. The lease moved it: back to its own time.
		m.restore(key, r.Refresh)
		return
	}
	fs, res, err := m.check(ctx, w)
	if ctx.Err() != nil {
		if r != nil {
			m.restore(key, r.Refresh) // keeps its place for the next run
		}
		return
	}
	_ = m.watches.Put(m.record(w, r, now, res, fs, err))
	m.checked(key)
	m.count(ctx, res, fs, err)
}

// checked notes that key's record no longer awaits its first check and
// tops the window of new records up (see newWindow).
func (m *Monitor) checked(key string) {
	m.mu.Lock()
	delete(m.fresh, key)
	m.mu.Unlock()
	m.topUp()
}

// keep is how long a record is kept after a check: watchKeep, or two
// intervals if longer.
func (m *Monitor) keep() time.Duration { return max(watchKeep, 2*m.Interval) }

// restore gives key's record (as the scheduler's lease left it) back its
// next check at refresh.
func (m *Monitor) restore(key string, refresh time.Time) {
	if cur := m.watches.Get(srccache.KindWatch, key); cur != nil {
		_ = m.watches.Reschedule(cur, refresh)
	}
}

// record is the watch record after a check of w that started at now:
// the result's verdict and the next check an Interval (±10%) later, or,
// when the probe failed or was not started, the last verdict kept (if it
// is of the same policy) and a retry within a tenth of the interval (a
// minute at most).
func (m *Monitor) record(w watch, prev *srccache.Record, now time.Time, res *probe.Result, fs []Finding, err error) *srccache.Record {
	wt := &srccache.Watch{Policy: w.e.Policy.Text, Level: CheckLevel(w.e.Policy), Testing: w.e.Testing, ID: w.id}
	r := &srccache.Record{Kind: srccache.KindWatch, Domain: w.key, Checked: now, Watch: wt}
	if err != nil {
		if prev != nil && prev.Watch != nil && sameSubject(prev.Watch, w) {
			old := prev.Watch
			wt.Probed, wt.Status, wt.Defer, wt.Inconclusive, wt.Findings = old.Probed, old.Status, old.Defer, old.Inconclusive, old.Findings
			r.Fetched = prev.Fetched
		}
		r.Error = err.Error()
		r.Refresh = now.Add(jitter(min(m.Interval/10, time.Minute)))
	} else {
		wt.Probed, wt.Status = now, res.Status
		r.Fetched = now
		for _, f := range fs {
			wt.Findings = append(wt.Findings, f.Reason)
			if f.Kind == events.OutboundProbeFailed && !f.OK {
				wt.Defer = f.Why
			}
		}
		if res.SaysNothingOfTLS() {
			wt.Inconclusive = strings.TrimSuffix(res.Status+": "+res.Reason, ": ")
		}
		r.Refresh = now.Add(jitter(m.Interval))
	}
	r.Expires = now.Add(m.keep())
	return r
}

// jitter returns d ±10%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// check probes w's destination, judges the result and publishes its
// findings. The error is the probe's.
func (m *Monitor) check(ctx context.Context, w watch) ([]Finding, *probe.Result, error) {
	e := w.e
	now := m.Now()
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	r, err := m.Probe(pctx, e.Key)
	cancel()
	if err == nil && r == nil {
		err = fmt.Errorf("probe %s: no result", e.Key)
	}
	if err != nil {
		if m.OnInconclusive != nil && ctx.Err() == nil {
			m.OnInconclusive(e, err.Error())
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, probe.ErrRateLimited):
			// Counted and logged in the summary: a flood of these must
			// not become a flood of log lines.
			m.Logger.Debug("probe not started", "entry", w.rule, "error", err)
		default:
			m.Logger.Warn("probe failed", "entry", w.rule, "error", err)
		}
		return nil, nil, err
	}
	if m.Cache != nil {
		m.Cache.Put(r)
	}
	fs := judge(e, r, now, w.subj)
	for _, f := range fs {
		// The domain is the next-hop without brackets or port (the host
		// of a [host]:port entry), as alerts, the report and
		// /api/events?domain= expect.
		ev := events.Event{Kind: f.Kind, Domain: r.NextHop, Rule: w.rule, Source: e.Source.String(),
			Action: string(f.Kind), Reason: f.Reason}
		if e.Testing {
			ev.Action = "testing"
		}
		m.Engine.Events().Publish(ev)
		m.Logger.Warn("outbound TLS policy", "event", string(f.Kind), "entry", w.rule, "source", ev.Source,
			"testing", e.Testing, "reason", f.Reason)
	}
	if m.OnInconclusive != nil && r.SaysNothingOfTLS() {
		m.OnInconclusive(e, r.Status+": "+r.Reason)
	}
	switch {
	case len(fs) > 0:
	case r.Status == probe.StatusTemporary || r.Status == probe.StatusUnreachable:
		m.Logger.Info("outbound probe inconclusive; retried at the next check", "entry", w.rule,
			"level", CheckLevel(e.Policy), "testing", e.Testing, "status", r.Status, "reason", r.Reason)
	case !m.Logger.Enabled(ctx, slog.LevelDebug): // skip building the record's arguments
	default:
		m.Logger.Debug("outbound probe ok", "entry", w.rule, "level", CheckLevel(e.Policy), "testing", e.Testing, "status", r.Status)
	}
	return fs, r, nil
}

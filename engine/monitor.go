package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// Defaults and limits of the Monitor's schedule.
const (
	// DefaultMonitorWorkers is the default of Monitor.Workers.
	DefaultMonitorWorkers = 4
	// DefaultMonitorInterval is the default of Monitor.Interval.
	DefaultMonitorInterval = time.Hour
	// maxGap is the longest wait between two probes of a pass, so that a
	// small table is checked within minutes of start, not over an hour.
	maxGap = 10 * time.Second
	// probeWait bounds one monitor probe, including its wait for a turn
	// under the prober's per-minute cap: a probe whose turn would come
	// later is not started (ErrRateLimited) and comes first next pass.
	probeWait = 10 * time.Minute
	// spanShare is the share of Interval a pass spreads its probes over;
	// the rest absorbs the ±10% jitter of the next pass's start and the
	// last probes' durations, so passes do not overlap.
	spanShare = 0.9
)

// Monitor re-probes, on a schedule, every outbound entry that enforces TLS
// or is in testing, and the domains of recipients: and senders: entries
// (see addressWatches), so the postmaster hears that enforcement blocks
// (or would block) mail while it is still queued, not after it bounced.
//
// Run makes one pass over the table every Interval (jittered by ±10%),
// spreading the pass's probes evenly over 90% of the interval (at most 10
// s apart, so a small table is checked within minutes, and at most
// MaxPerMinute a minute) and handing them, in order, to Workers
// goroutines: the monitor's memory and load stay flat whatever the size of
// the table. A pass takes testing entries first, then entries never
// probed, then the rest, least recently probed first; an entry the pass
// had no time for, or whose probe the prober's cap refused, is therefore
// among the first of the next pass.
type Monitor struct {
	Engine *Engine
	Probe  probe.Func
	Cache  *probe.Cache // results are stored here too (may be nil)
	// Interval is the time between passes (default 1h, jittered by ±10%).
	Interval time.Duration
	// Workers is how many probes the monitor has in flight at most
	// (default DefaultMonitorWorkers). The prober's own Concurrency bounds
	// the connections of all its callers.
	Workers int
	// MaxPerMinute paces a pass to at most this many probe starts a
	// minute: set it to the prober's probe.Config.MaxPerMinute so that a
	// pass keeps to the cap instead of queueing for it (0 or negative: no
	// pacing beyond spreading the pass over the interval). A table too
	// large to probe within an interval at this rate is probed over
	// several passes, least recently probed first; each pass logs how many
	// entries it had no time for.
	MaxPerMinute int
	// OnInconclusive, if set, is called (from the workers, concurrently)
	// for every entry whose probe said nothing about its TLS: the probe
	// failed or was not started (rate limit), or the destination was
	// unreachable, failed temporarily or accepts no mail (null MX). Judge
	// yields no finding then; `check --probe` reports these, so that a
	// CI gate does not pass an entry it could not probe.
	OnInconclusive func(e *store.Entry, why string)
	Logger         *slog.Logger
	Now            func() time.Time

	firstDelay time.Duration   // before Run's first pass (default 5s; tests shorten it)
	onPass     func(passStats) // if set, called after every pass of Run and CheckAll (tests)

	once    sync.Once
	kick    chan string
	mu      sync.Mutex
	checked map[string]checkState // key → last probe
	passNo  uint64
}

// checkState is what the monitor remembers of one entry's probes.
type checkState struct {
	at   time.Time // start of the last probe (zero: never)
	pass uint64    // last pass that found the key in the table
}

// passStats sums up one pass over the monitored entries.
type passStats struct {
	Start    time.Time
	Duration time.Duration
	// Entries is the number of monitored entries when the pass began.
	Entries int
	// Probed counts probes that returned a result; Findings the entries
	// among them that raised an event, Inconclusive those whose result
	// says nothing about TLS (temporary failure, unreachable).
	Probed, Findings, Inconclusive int
	// RateLimited counts probes the prober refused under its per-minute
	// cap, Failed other probe errors. Neither counts as probed.
	RateLimited, Failed int
	// NotReached counts the entries the pass had no time for within the
	// interval (Run only).
	NotReached int
}

func (m *Monitor) init() {
	m.once.Do(func() {
		m.kick = make(chan string, 256)
		m.checked = map[string]checkState{}
		if m.Interval <= 0 {
			m.Interval = DefaultMonitorInterval
		}
		if m.Workers <= 0 {
			m.Workers = DefaultMonitorWorkers
		}
		if m.firstDelay <= 0 {
			m.firstDelay = 5 * time.Second
		}
		if m.Logger == nil {
			m.Logger = slog.Default()
		}
		if m.Now == nil {
			m.Now = time.Now
		}
	})
}

// Kick asks for a probe of a testing or enforced entry that a lookup just
// used, unless it was probed within the interval. It never blocks; Run
// hands the probe to one of its workers.
func (m *Monitor) Kick(e *store.Entry) {
	m.init()
	if !probeable(e) {
		return
	}
	select {
	case m.kick <- e.Key:
	default:
	}
}

// CheckAll probes every monitored entry of the current table now, at most
// Workers at once, in the order of a pass, publishes events for its
// findings and returns them.
func (m *Monitor) CheckAll(ctx context.Context) []Finding {
	m.init()
	entries := m.due()
	if len(entries) == 0 {
		return nil
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range m.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.work(ctx, work)
		}()
	}
	st := m.pass(ctx, work, entries, 0, time.Time{}, true)
	close(work)
	wg.Wait()
	m.passDone(ctx, st)
	return st.findings
}

// Run probes every monitored entry shortly after start and then every
// Interval (see Monitor), plus entries kicked by lookups, until ctx ends.
// It returns once its workers have stopped.
func (m *Monitor) Run(ctx context.Context) error {
	m.init()
	m.seed()
	work := make(chan job)
	var wg sync.WaitGroup
	for range m.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.work(ctx, work)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.kicked(ctx, work)
	}()
	defer wg.Wait()

	timer := time.NewTimer(m.firstDelay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		start := time.Now()
		span := time.Duration(spanShare * float64(m.Interval))
		entries := m.due()
		gap := passGap(len(entries), span, m.MaxPerMinute)
		st := m.pass(ctx, work, entries, gap, start.Add(span), false)
		if ctx.Err() != nil {
			return nil
		}
		m.passDone(ctx, st)
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(m.Interval))
		timer.Reset(max(time.Until(start.Add(m.Interval+jitter)), time.Second))
	}
}

// passGap is the time between the starts of consecutive probes of a pass
// over n entries: the pass spread evenly over span, but at most maxGap
// apart and no closer than perMinute (when positive) allows.
func passGap(n int, span time.Duration, perMinute int) time.Duration {
	if n <= 0 {
		return 0
	}
	gap := min(span/time.Duration(n), maxGap)
	if perMinute > 0 {
		gap = max(gap, time.Minute/time.Duration(perMinute))
	}
	return gap
}

// seed takes the probe times of results already in the cache (a previous
// run's, loaded from its file) as the entries' last probes, so that after
// a restart a pass starts with the entries not probed for longest.
func (m *Monitor) seed() {
	s := m.Engine.Store()
	if m.Cache == nil || s == nil {
		return
	}
	results := m.Cache.All()
	if len(results) == 0 {
		return
	}
	byTarget := make(map[string]time.Time, len(results))
	for _, r := range results {
		byTarget[r.Target] = r.Time
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ws := addressWatches(s)
	for _, e := range s.Table().Outbound {
		if probeable(e) {
			ws = append(ws, outboundWatch(e))
		}
	}
	for _, w := range ws {
		key, err := probe.Canonical(w.e.Key)
		if err != nil {
			continue
		}
		if at, ok := byTarget[key]; ok && m.checked[w.key].at.IsZero() {
			m.checked[w.key] = checkState{at: at}
		}
	}
}

// queued is one entry of a pass, with its last probe time (UnixNano; 0:

// kicked hands kicked entries not probed within the interval to work
// until ctx ends.
func (m *Monitor) kicked(ctx context.Context, work chan<- job) {
	for {
		var key string
		select {
		case <-ctx.Done():
			return
		case key = <-m.kick:
		}
		m.mu.Lock()
		last := m.checked[key].at
		m.mu.Unlock()
		if !last.IsZero() && m.Now().Sub(last) < m.Interval {
			continue
		}
		s := m.Engine.Store()
		if s == nil {
			continue
		}
		e := s.OutboundByKey(key)
		if e == nil || !probeable(e) {
			continue
		}
		select {
		case work <- job{w: outboundWatch(e)}:
		case <-ctx.Done():
			return
		}
	}
}

// claim records that a probe of key starts now and returns the previous
// state. With ifDue it claims only a key not probed within the interval
// (a kick racing a pass or another kick).
func (m *Monitor) claim(key string, now time.Time, ifDue bool) (prev checkState, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev = m.checked[key]
	if ifDue && !prev.at.IsZero() && now.Sub(prev.at) < m.Interval {
		return prev, false
	}
	m.checked[key] = checkState{at: now, pass: prev.pass}
	return prev, true
}

// unclaim undoes claim when the probe did not happen (refused, failed,
// cancelled), so that the entry keeps its place at the front of a pass.
func (m *Monitor) unclaim(key string, now time.Time, prev checkState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cs, ok := m.checked[key]; ok && cs.at.Equal(now) {
		prev.pass = cs.pass
		m.checked[key] = prev
	}
}

// checkOne probes e, judges the result and publishes its findings. The
// error is the probe's; a refused kick (probed within the interval) is
// (nil, nil, nil).
func (m *Monitor) checkOne(ctx context.Context, w watch, kick bool) ([]Finding, *probe.Result, error) {
	e := w.e
	now := m.Now()
	prev, ok := m.claim(w.key, now, kick)
	if !ok {
		return nil, nil, nil
	}
	pctx, cancel := context.WithTimeout(ctx, probeWait)
	r, err := m.Probe(pctx, e.Key)
	cancel()
	if err == nil && r == nil {
		err = fmt.Errorf("probe %s: no result", e.Key)
	}
	if err != nil {
		m.unclaim(w.key, now, prev)
		if m.OnInconclusive != nil && ctx.Err() == nil {
			m.OnInconclusive(e, err.Error())
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, probe.ErrRateLimited):
			// Counted and logged once per pass: a flood of these must
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

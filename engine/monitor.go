package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// CertWarning is how long before a certificate's expiry an enforced
// verify/secure destination raises an event.
const CertWarning = 14 * 24 * time.Hour

// Finding is what one probe says about one outbound entry.
type Finding struct {
	Entry  *store.Entry
	Result *probe.Result
	Level  string // the probe level checked: encrypt, verify or secure
	OK     bool   // delivery under Level would succeed to every reachable MX
	Kind   events.Kind
	Reason string // the event text ("" when OK and nothing expires)
}

// CheckLevel is the probe level whose verdict Judge starts from, or ""
// when the prober cannot tell whether enforcing p delivers.
func CheckLevel(p *store.Policy) string {
	switch p.Level {
	case store.LevelVerify:
		return probe.LevelVerify
	case store.LevelSecure:
		return probe.LevelSecure
	case store.LevelEncrypt, store.LevelDaneOnly, store.LevelFingerprint:
		// fingerprint: Judge also checks match= against the leaf.
		// dane-only: STARTTLS with a working handshake is necessary, not
		// sufficient: Postfix also needs usable (DNSSEC-validated) TLSA
		// records matching the server, and the prober looks up neither.
		// A passing probe therefore does not show that dane-only delivers.
		return probe.LevelEncrypt
	}
	// none and may enforce nothing. dane neither: without usable TLSA
	// records Postfix falls back to may and delivers (in cleartext if need
	// be); with them it authenticates the server against them, which the
	// prober, doing no TLSA or DNSSEC lookups, cannot judge.
	return ""
}

// Probeable reports whether the monitor checks e: an outbound entry that
// enforces TLS or is being tested, for a key the prober can reach (not a
// .parent wildcard).
func Probeable(e *store.Entry) bool {
	return CheckLevel(e.Policy) != "" && !strings.HasPrefix(e.Key, ".")
}

// Judge turns a probe result for entry e into findings: whether enforcing
// e delivers, and whether a verify/secure certificate expires soon.
// Temporary probe failures (DNS SERVFAIL, 4xx banners) and unreachable
// destinations yield nothing: they say nothing about the destination's TLS
// (Postfix defers that mail whatever the policy).
//
// Beyond the level, Judge checks at every reached address what the
// policy's attributes demand and the record can tell (see attrFailures):
// protocols=, fingerprint match=, and verify/secure match= (or tafile=,
// which replaces the trust in system roots). It raises a finding only for
// a failure it is sure of. It cannot judge ciphers= and exclude= (the
// prober offers the suites Postfix offers by default with OpenSSL 3, not
// a policy's own list) nor servername= (the prober sends no
// SNI, so a server choosing its certificate by SNI may show Postfix
// another one).
func Judge(e *store.Entry, r *probe.Result, now time.Time) []Finding {
	level := CheckLevel(e.Policy)
	if level == "" || r == nil || r.SaysNothingOfTLS() {
		return nil
	}
	match, ownMatch := certMatch(e.Policy)
	base := level
	if ownMatch {
		// The probe's verify and secure verdicts apply the default match
		// lists and the system roots: start from encrypt instead.
		base = probe.LevelEncrypt
	}
	v, ok := r.Levels[base]
	f := Finding{Entry: e, Result: r, Level: level, OK: ok && v.OK, Kind: events.OutboundProbeFailed}
	why := cmp.Or(v.Reason, r.Reason)
	if f.OK {
		why = probe.JoinReasons(attrFailures(e.Policy, r, match, ownMatch))
		f.OK = why == ""
	}
	var out []Finding
	if !f.OK {
		if e.Testing {
			f.Reason = fmt.Sprintf("enforcing %s for %s would defer mail: %s", e.Policy.Text, e.Key, why)
		} else {
			f.Reason = fmt.Sprintf("mail to %s is deferred: policy %s cannot be met: %s", e.Key, e.Policy.Text, why)
		}
		out = append(out, f)
	}
	if level == probe.LevelVerify || level == probe.LevelSecure {
		for _, mx := range r.MX {
			for _, a := range mx.Addrs {
				if a.TLS == nil || len(a.TLS.Chain) == 0 {
					continue
				}
				na := a.TLS.Chain[0].NotAfter
				if left := na.Sub(now); left > 0 && left < CertWarning {
					days := fmt.Sprintf("%d days", int(left.Hours()/24)+1)
					if left < 24*time.Hour {
						days = "1 day"
					}
					out = append(out, Finding{Entry: e, Result: r, Level: level, OK: f.OK, Kind: events.CertExpiring,
						Reason: fmt.Sprintf("certificate of %s[%s] for %s expires %s (in %s); under %s mail will then be deferred",
							mx.Host, a.Addr, e.Key, na.UTC().Format("2006-01-02"), days, e.Policy.Level)})
				}
			}
		}
	}
	return out
}

// certMatch returns, for a verify or secure policy whose certificate check
// differs from the probe's (match= set, or tafile= replacing the system
// roots), the match list to check the leaf's names against (the level's
// default when match= is unset; several match attributes add up, as in
// smtp_tls_policy.c) and ok true.
func certMatch(p *store.Policy) (match string, ok bool) {
	var def string
	switch p.Level {
	case store.LevelVerify:
		def = probe.DefaultVerifyMatch
	case store.LevelSecure:
		def = probe.DefaultSecureMatch
	default:
		return "", false
	}
	match = attrValues(p, "match", ":")
	if _, tafile := p.Attr("tafile"); match == "" && !tafile {
		return "", false
	}
	return cmp.Or(match, def), true
}

// attrValues joins the values of every attribute name of p with sep.
func attrValues(p *store.Policy, name, sep string) string {
	var vs []string
	for _, a := range p.Attrs {
		if a.Name == name && a.Value != "" {
			vs = append(vs, a.Value)
		}
	}
	return strings.Join(vs, sep)
}

// attrFailures checks, at every reached address that completed a TLS
// handshake, what p's attributes demand beyond the level verdict: the
// TLS versions protocols= lets Postfix offer, the fingerprint level's
// match= digests, and, when ownMatch, trust and the leaf's names against
// the list match (see certMatch). It returns "host[addr]: why" for every
// address that fails for certain; what the record cannot tell (a server
// above protocols='s maximum, an unknown fingerprint digest, names beyond
// the recorded ones) is no failure.
func attrFailures(p *store.Policy, r *probe.Result, match string, ownMatch bool) []string {
	protocols, checkProtocols := p.Attr("protocols")
	var lo, hi uint16
	if checkProtocols {
		var err error
		// The table loader rejects a protocols= value it cannot read.
		lo, hi, err = store.ProtocolRange(protocols)
		checkProtocols = err == nil
	}
	fingerprints := ""
	if p.Level == store.LevelFingerprint {
		fingerprints = attrValues(p, "match", "|")
	}
	// With tafile= Postfix trusts the chain by those anchors, not the
	// system roots the prober uses: only the names can be judged.
	_, tafile := p.Attr("tafile")
	var fails []string
	for _, mx := range r.MX {
		for i := range mx.Addrs {
			a := &mx.Addrs[i]
			if !a.Reached || a.TLS == nil {
				continue // the level verdict covers these
			}
			var why string
			if checkProtocols {
				why = failure(a.TLS.CheckProtocols(lo, hi))
			}
			if why == "" && fingerprints != "" {
				why = failure(a.TLS.CheckFingerprint(fingerprints))
			}
			if why == "" && ownMatch {
				why = failure(a.TLS.CheckMatch(match, mx.Host, r.NextHop, !tafile))
			}
			if why != "" {
				fails = append(fails, a.Where(mx.Host)+": "+why)
			}
		}
	}
	return fails
}

// failure is the reason of a check known to fail, else "".
func failure(c probe.Check, known bool) string {
	if known && !c.OK {
		return c.Reason
	}
	return ""
}

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
// or is in testing, so the postmaster hears that enforcement blocks (or
// would block) mail while it is still queued, not after it bounced.
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
	Probe  probe.ProbeFunc
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
	// OnPass, if set, is called after every pass of Run and CheckAll with
	// its counts (metrics, tests).
	OnPass func(PassStats)
	// OnInconclusive, if set, is called (from the workers, concurrently)
	// for every entry whose probe said nothing about its TLS: the probe
	// failed or was not started (rate limit), or the destination was
	// unreachable, failed temporarily or accepts no mail (null MX). Judge
	// yields no finding then; `check --probe` reports these, so that a
	// CI gate does not pass an entry it could not probe.
	OnInconclusive func(e *store.Entry, why string)
	Logger         *slog.Logger
	Now            func() time.Time

	firstDelay time.Duration // before Run's first pass (default 5s; tests shorten it)

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

// PassStats sums up one pass over the monitored entries.
type PassStats struct {
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
	if !Probeable(e) {
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
	for _, e := range s.Table().Outbound {
		if !Probeable(e) {
			continue
		}
		key, err := probe.Canonical(e.Key)
		if err != nil {
			continue
		}
		if at, ok := byTarget[key]; ok && m.checked[e.Key].at.IsZero() {
			m.checked[e.Key] = checkState{at: at}
		}
	}
}

// queued is one entry of a pass, with its last probe time (UnixNano; 0:
// never) for ordering.
type queued struct {
	e    *store.Entry
	last int64
}

// due returns the monitored entries of the current table in pass order:
// testing entries first, then entries never probed, then the least
// recently probed; table order among equals. It forgets the probe times
// of keys no longer in the table.
func (m *Monitor) due() []queued {
	s := m.Engine.Store()
	if s == nil {
		return nil
	}
	all := s.Table().Outbound
	n := 0
	for _, e := range all {
		if Probeable(e) {
			n++
		}
	}
	out := make([]queued, 0, n)
	m.mu.Lock()
	m.passNo++
	for _, e := range all {
		if !Probeable(e) {
			continue
		}
		q := queued{e: e}
		if cs, ok := m.checked[e.Key]; ok {
			cs.pass = m.passNo
			m.checked[e.Key] = cs
			if !cs.at.IsZero() {
				q.last = cs.at.UnixNano()
			}
		}
		out = append(out, q)
	}
	for k, cs := range m.checked {
		if cs.pass != m.passNo {
			delete(m.checked, k)
		}
	}
	m.mu.Unlock()
	slices.SortStableFunc(out, func(a, b queued) int {
		if a.e.Testing != b.e.Testing {
			if a.e.Testing {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.last, b.last) // 0 (never probed) first
	})
	return out
}

// job is one probe for a worker; st is nil for a kick.
type job struct {
	e  *store.Entry
	st *passState
}

// passState is the running count of one pass.
type passState struct {
	PassStats
	collect  bool // keep findings (CheckAll)
	mu       sync.Mutex
	findings []Finding
	firstErr error
	wg       sync.WaitGroup
}

// pass hands entries to work in order, the i-th at a random time within
// [start+i·gap, start+(i+1)·gap) (gap 0: as soon as a worker is free), and
// stops handing out at end (zero: never) or when ctx ends. It returns once
// every probe it handed out has finished.
func (m *Monitor) pass(ctx context.Context, work chan<- job, entries []queued, gap time.Duration, end time.Time, collect bool) *passState {
	st := &passState{collect: collect}
	st.Start = time.Now()
	st.Entries = len(entries)
	var endC <-chan time.Time
	if !end.IsZero() {
		et := time.NewTimer(time.Until(end))
		defer et.Stop()
		endC = et.C
	}
	var wait *time.Timer
	handed := 0
feed:
	for i, q := range entries {
		if gap > 0 {
			at := st.Start.Add(time.Duration(i)*gap + rand.N(gap))
			if !end.IsZero() && at.After(end) {
				break
			}
			if d := time.Until(at); d > 0 {
				if wait == nil {
					wait = time.NewTimer(d)
					defer wait.Stop()
				} else {
					wait.Reset(d)
				}
				select {
				case <-wait.C:
				case <-ctx.Done():
					break feed
				}
			}
		}
		st.wg.Add(1)
		select {
		case work <- job{e: q.e, st: st}:
			handed++
		case <-ctx.Done():
			st.wg.Done()
			break feed
		case <-endC:
			st.wg.Done()
			break feed
		}
	}
	st.NotReached = len(entries) - handed
	st.wg.Wait()
	st.Duration = time.Since(st.Start)
	return st
}

// passDone logs one line for a finished pass (whatever its size and its
// refused probes) and calls OnPass.
func (m *Monitor) passDone(ctx context.Context, st *passState) {
	if ctx.Err() != nil {
		return
	}
	args := []any{"entries", st.Entries, "probed", st.Probed, "findings", st.Findings,
		"inconclusive", st.Inconclusive, "rate_limited", st.RateLimited, "failed", st.Failed,
		"not_reached", st.NotReached, "duration", st.Duration.Round(time.Millisecond)}
	switch {
	case st.RateLimited > 0 || st.NotReached > 0:
		m.Logger.Warn("monitor pass incomplete: the probe rate limit or the interval left entries unprobed; they come first next pass (to probe every entry each pass, raise probe.max_per_minute, probe.monitor_workers or probe.interval)", args...)
	case st.Failed > 0:
		m.Logger.Warn("monitor pass finished with probe errors", append(args, "error", st.firstErr)...)
	default:
		m.Logger.Info("monitor pass finished", args...)
	}
	if m.OnPass != nil {
		m.OnPass(st.PassStats)
	}
}

// work runs jobs until work is closed or ctx ends.
func (m *Monitor) work(ctx context.Context, work <-chan job) {
	for {
		var j job
		var ok bool
		select {
		case j, ok = <-work:
			if !ok {
				return
			}
		case <-ctx.Done():
			return
		}
		fs, res, err := m.checkOne(ctx, j.e, j.st == nil)
		if st := j.st; st != nil {
			st.mu.Lock()
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, probe.ErrRateLimited):
				st.RateLimited++
			case err != nil:
				st.Failed++
				if st.firstErr == nil {
					st.firstErr = err
				}
			default:
				st.Probed++
				if len(fs) > 0 {
					st.Findings++
				} else if res.Status == probe.StatusTemporary || res.Status == probe.StatusUnreachable {
					st.Inconclusive++
				}
				if st.collect {
					st.findings = append(st.findings, fs...)
				}
			}
			st.mu.Unlock()
			st.wg.Done()
		}
	}
}

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
		e, err := s.OutboundByKey(key)
		if err != nil || e == nil || !Probeable(e) {
			continue
		}
		select {
		case work <- job{e: e}:
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
func (m *Monitor) checkOne(ctx context.Context, e *store.Entry, kick bool) ([]Finding, *probe.Result, error) {
	now := m.Now()
	prev, ok := m.claim(e.Key, now, kick)
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
		m.unclaim(e.Key, now, prev)
		if m.OnInconclusive != nil && ctx.Err() == nil {
			m.OnInconclusive(e, err.Error())
		}
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, probe.ErrRateLimited):
			// Counted and logged once per pass: a flood of these must
			// not become a flood of log lines.
			m.Logger.Debug("probe not started", "entry", e.Key, "error", err)
		default:
			m.Logger.Warn("probe failed", "entry", e.Key, "error", err)
		}
		return nil, nil, err
	}
	if m.Cache != nil {
		m.Cache.Put(r)
	}
	fs := Judge(e, r, now)
	for _, f := range fs {
		// The domain is the next-hop without brackets or port (the host
		// of a [host]:port entry), as alerts, the report and
		// /api/events?domain= expect.
		ev := events.Event{Kind: f.Kind, Domain: r.NextHop, Rule: e.Key, Source: e.Source.String(),
			Action: string(f.Kind), Reason: f.Reason}
		if e.Testing {
			ev.Action = "testing"
		}
		m.Engine.Events().Publish(ev)
		m.Logger.Warn("outbound TLS policy", "event", string(f.Kind), "entry", e.Key, "source", ev.Source,
			"testing", e.Testing, "reason", f.Reason)
	}
	if m.OnInconclusive != nil && r.SaysNothingOfTLS() {
		m.OnInconclusive(e, r.Status+": "+r.Reason)
	}
	switch {
	case len(fs) > 0:
	case r.Status == probe.StatusTemporary || r.Status == probe.StatusUnreachable:
		m.Logger.Info("outbound probe inconclusive; retried at the next check", "entry", e.Key,
			"level", CheckLevel(e.Policy), "testing", e.Testing, "status", r.Status, "reason", r.Reason)
	case !m.Logger.Enabled(ctx, slog.LevelDebug): // skip building the record's arguments
	default:
		m.Logger.Debug("outbound probe ok", "entry", e.Key, "level", CheckLevel(e.Policy), "testing", e.Testing, "status", r.Status)
	}
	return fs, r, nil
}

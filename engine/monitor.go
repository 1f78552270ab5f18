package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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

// checkLevel is the probe level that tells whether enforcing p would
// deliver, or "" when p enforces nothing the prober can check.
func checkLevel(p *store.Policy) string {
	switch p.Level {
	case store.LevelVerify:
		return probe.LevelVerify
	case store.LevelSecure:
		return probe.LevelSecure
	case store.LevelEncrypt, store.LevelDane, store.LevelDaneOnly, store.LevelFingerprint:
		// DANE and fingerprint checks need more than the prober sees, but
		// all of them need STARTTLS and a working handshake first.
		return probe.LevelEncrypt
	}
	return ""
}

// Probeable reports whether the monitor checks e: an outbound entry that
// enforces TLS or is being tested, for a key the prober can reach (not a
// .parent wildcard).
func Probeable(e *store.Entry) bool {
	return checkLevel(e.Policy) != "" && !strings.HasPrefix(e.Key, ".")
}

// Judge turns a probe result for entry e into findings: whether enforcing
// e delivers, and whether a verify/secure certificate expires soon.
// Temporary probe failures (DNS SERVFAIL, 4xx banners) and unreachable
// destinations yield nothing: they say nothing about the destination's TLS
// (Postfix defers that mail whatever the policy).
func Judge(e *store.Entry, r *probe.Result, now time.Time) []Finding {
	level := checkLevel(e.Policy)
	if level == "" || r == nil || r.Status == probe.StatusTemporary || r.Status == probe.StatusNoMail || r.Status == probe.StatusUnreachable {
		return nil
	}
	v, ok := r.Levels[level]
	f := Finding{Entry: e, Result: r, Level: level, OK: ok && v.OK, Kind: events.OutboundProbeFailed}
	var out []Finding
	if !f.OK {
		why := v.Reason
		if why == "" {
			why = r.Reason
		}
		if e.Testing {
			f.Reason = fmt.Sprintf("enforcing %s for %s would defer mail: %s", e.Policy.Level, e.Key, why)
		} else {
			f.Reason = fmt.Sprintf("mail to %s is deferred: policy %s cannot be met: %s", e.Key, e.Policy.Level, why)
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

// Monitor re-probes, on a schedule, every outbound entry that enforces TLS
// or is in testing, so the postmaster hears that enforcement blocks (or
// would block) mail while it is still queued, not after it bounced.
type Monitor struct {
	Engine   *Engine
	Probe    probe.ProbeFunc
	Cache    *probe.Cache  // results are stored here too (may be nil)
	Interval time.Duration // default 1h, jittered by ±10%
	Logger   *slog.Logger
	Now      func() time.Time

	once    sync.Once
	kick    chan string
	mu      sync.Mutex
	checked map[string]time.Time // key → last probe
}

func (m *Monitor) init() {
	m.once.Do(func() {
		m.kick = make(chan string, 256)
		m.checked = map[string]time.Time{}
		if m.Interval <= 0 {
			m.Interval = time.Hour
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
// used, unless it was probed within the interval. It never blocks.
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

// CheckAll probes every monitored entry of the current table now (in
// parallel, bounded by the prober) and publishes events for its findings.
func (m *Monitor) CheckAll(ctx context.Context) []Finding {
	m.init()
	s := m.Engine.Store()
	if s == nil {
		return nil
	}
	var entries []*store.Entry
	for _, e := range s.Table().Outbound {
		if Probeable(e) {
			entries = append(entries, e)
		}
	}
	return m.check(ctx, entries)
}

func (m *Monitor) check(ctx context.Context, entries []*store.Entry) []Finding {
	var mu sync.Mutex
	var all []Finding
	var wg sync.WaitGroup
	for _, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs := m.checkOne(ctx, e)
			mu.Lock()
			all = append(all, fs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

func (m *Monitor) checkOne(ctx context.Context, e *store.Entry) []Finding {
	now := m.Now()
	m.mu.Lock()
	m.checked[e.Key] = now
	m.mu.Unlock()
	r, err := m.Probe(ctx, e.Key)
	if err != nil {
		m.Logger.Warn("probe failed", "target", e.Key, "error", err)
		return nil
	}
	if m.Cache != nil {
		m.Cache.Put(r)
	}
	fs := Judge(e, r, now)
	for _, f := range fs {
		ev := events.Event{Kind: f.Kind, Domain: strings.Trim(e.Key, "[]"), Rule: e.Key, Source: e.Source.String(),
			Action: string(f.Kind), Reason: f.Reason}
		if e.Testing {
			ev.Action = "testing"
		}
		m.Engine.Events().Publish(ev)
		m.Logger.Warn("outbound TLS policy", "event", string(f.Kind), "entry", e.Key, "source", ev.Source,
			"testing", e.Testing, "reason", f.Reason)
	}
	switch {
	case len(fs) > 0:
	case r.Status == probe.StatusTemporary || r.Status == probe.StatusUnreachable:
		m.Logger.Info("outbound probe inconclusive; retried at the next check", "entry", e.Key,
			"level", checkLevel(e.Policy), "testing", e.Testing, "status", r.Status, "reason", r.Reason)
	default:
		m.Logger.Info("outbound probe ok", "entry", e.Key, "level", checkLevel(e.Policy), "testing", e.Testing, "status", r.Status)
	}
	return fs
}

// Run probes every monitored entry shortly after start and then every
// Interval (jittered, so that many daemons do not probe in step), plus
// entries kicked by lookups, until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	m.init()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			m.CheckAll(ctx)
			jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(m.Interval))
			timer.Reset(m.Interval + jitter)
		case key := <-m.kick:
			m.mu.Lock()
			last, seen := m.checked[key]
			m.mu.Unlock()
			if seen && m.Now().Sub(last) < m.Interval {
				continue
			}
			s := m.Engine.Store()
			if s == nil {
				continue
			}
			if e, err := s.OutboundByKey(key); err == nil && e != nil {
				go m.checkOne(ctx, e)
			}
		}
	}
}

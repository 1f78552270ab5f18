// Package sources answers TLS policies for destinations the policy table
// does not list, from DANE (RFC 7672) and MTA-STS (RFC 8461), DANE first
// (RFC 8461 §2). What it learns is kept in the go-memdb source cache
// (srccache) and refreshed in the background by its one Scheduler; a lookup
// of a cached domain reads the cache only. A first lookup of a domain
// fetches once however many lookups wait for it (singleflight), waits at
// most Config.Timeout, and past that answers what the RFCs say when no
// policy is known: nothing for MTA-STS, defer for DANE records known to
// exist.
package sources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// Source names, as query --explain, the status page and metrics show them.
const (
	SourceDANE   = "dane"
	SourceMTASTS = "mta-sts"
)

// ErrTemp is returned when a destination's DANE records are known to
// exist but cannot be read now: the caller answers TEMP (fail closed).
var ErrTemp = errors.New("DANE records exist but cannot be read now")

// DefaultTimeout is how long a lookup waits for a first fetch.
const DefaultTimeout = 5 * time.Second

// fetchTimeout bounds a fetch (its DNS queries and policy download),
// which goes on after the lookup that started it stopped waiting.
const fetchTimeout = 30 * time.Second

// Config configures a Manager.
type Config struct {
	DANE    *dane.Resolver  // nil: DANE is not a source
	MTASTS  *mtasts.Fetcher // nil: MTA-STS is not a source
	Cache   *srccache.Cache
	Timeout time.Duration // a lookup's wait for a first fetch; DefaultTimeout if 0
	Workers int           // refreshes of each kind in flight at most (4 if 0)
	Logger  *slog.Logger
	// Offline answers from the cache as it is and never fetches (query
	// reading the daemon's snapshot): a kind is on when its DANE or
	// MTASTS field is set, which is then never called.
	Offline bool
	// OnPolicy, if set, is called after each fetch or refresh that keeps
	// an MTA-STS policy in mode enforce or testing, so that the monitor
	// can check the domain's MX hosts against it. It must not block.
	OnPolicy func(*srccache.Record)
}

// Decision is what the sources say about a domain.
type Decision struct {
	Source  string // SourceDANE, SourceMTASTS, or "" when they decide nothing
	Policy  string // the Postfix policy; "" with Source "" (and for MTA-STS testing)
	Why     string // for query --explain
	Testing bool   // an MTA-STS policy in mode testing: not enforced, logged and counted
	Record  *srccache.Record
}

// Manager resolves domains from the sources and keeps their cache fresh.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	sf    singleflight.Group
	used  sync.Map // domain -> *atomic.Int64: Unix second of the last lookup
	stats stats
	sched *srccache.Scheduler // set by Register: lookups queue rechecks there
}

// New returns a Manager. cfg.Cache is required.
func New(cfg Config) (*Manager, error) {
	if cfg.Cache == nil {
		return nil, errors.New("sources: no cache")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log}, nil
}

// SetOnPolicy sets Config.OnPolicy. Call it before Run and the first
// Resolve.
func (m *Manager) SetOnPolicy(f func(*srccache.Record)) { m.cfg.OnPolicy = f }

// Enabled reports whether any source is on.
func (m *Manager) Enabled() bool { return m != nil && (m.cfg.DANE != nil || m.cfg.MTASTS != nil) }

// Cache returns the source cache.
func (m *Manager) Cache() *srccache.Cache { return m.cfg.Cache }

// Resolve returns the sources' decision for a bare domain (lower case, no
// trailing dot). The error wraps ErrTemp when DANE records are known to
// exist but cannot be read: the caller must defer.
func (m *Manager) Resolve(ctx context.Context, domain string) (Decision, error) {
	now := time.Now()
	dr, mr := m.records(domain)
	if !m.cfg.Offline && m.needFetch(dr, mr, now) {
		m.firstLookup(ctx, domain)
		now = time.Now()
		dr, mr = m.records(domain)
	}
	m.touch(domain, now)
	if dr != nil {
		m.recheck(dr, now)
	}
	if mr != nil {
		m.recheck(mr, now)
	}
	d, err := m.decide(dr, mr, now)
	m.stats.answer(d, err)
	return d, err
}

func (m *Manager) records(domain string) (dr, mr *srccache.Record) {
	if m.cfg.DANE != nil {
		dr = m.cfg.Cache.Get(srccache.KindDANE, domain)
	}
	if m.cfg.MTASTS != nil {
		mr = m.cfg.Cache.Get(srccache.KindMTASTS, domain)
	}
	return dr, mr
}

func (m *Manager) needFetch(dr, mr *srccache.Record, now time.Time) bool {
	return m.cfg.DANE != nil && !dr.Valid(now) || m.cfg.MTASTS != nil && !mr.Valid(now)
}

// decide applies the order DANE, then MTA-STS to valid records.
func (m *Manager) decide(dr, mr *srccache.Record, now time.Time) (Decision, error) {
	if dr.Valid(now) {
		if dr.Temp {
			return Decision{Source: SourceDANE, Why: dr.Why, Record: dr}, fmt.Errorf("%w: %s", ErrTemp, dr.Error)
		}
		if dr.Answer != "" {
			return Decision{Source: SourceDANE, Policy: dr.Answer, Why: dr.Why, Record: dr}, nil
		}
	} else if dr != nil && knownDANE(dr) {
		// The first lookup did not finish in time and the last answer
		// said DANE records exist: defer rather than guess weaker.
		return Decision{Source: SourceDANE, Why: "DANE records were published and could not be looked up again in time", Record: dr},
			fmt.Errorf("%w: lookup of %s timed out", ErrTemp, dr.Domain)
	}
	if mr.Valid(now) && mr.MTASTS != nil && mr.MTASTS.Policy != nil {
		if mr.Answer != "" {
			return Decision{Source: SourceMTASTS, Policy: mr.Answer, Why: mr.Why, Record: mr}, nil
		}
		if mr.MTASTS.Policy.Mode == mtasts.ModeTesting {
			return Decision{Testing: true, Why: mr.Why, Record: mr}, nil
		}
	}
	return Decision{}, nil
}

// knownDANE reports whether a record says DANE records exist.
func knownDANE(r *srccache.Record) bool {
	return r.Temp || r.DANE != nil && r.DANE.Level != ""
}

// firstLookup fetches what domain lacks, once for all concurrent callers,
// and waits at most Config.Timeout (or until ctx is done) for it. The
// fetch goes on in the background if the wait ends first.
func (m *Manager) firstLookup(ctx context.Context, domain string) {
	now := time.Now()
	dr, mr := m.records(domain)
	var chans []<-chan singleflight.Result
	if m.cfg.DANE != nil && !dr.Valid(now) {
		chans = append(chans, m.fetch(srccache.KindDANE, domain))
	}
	if m.cfg.MTASTS != nil && !mr.Valid(now) {
		chans = append(chans, m.fetch(srccache.KindMTASTS, domain))
	}
	timer := time.NewTimer(m.cfg.Timeout)
	defer timer.Stop()
	for _, ch := range chans {
		select {
		case <-ch:
		case <-timer.C:
			m.stats.timeouts.Add(1)
			m.log.Info("source lookup still running after sources.timeout; answered without it", "domain", domain, "timeout", m.cfg.Timeout)
			return
		case <-ctx.Done():
			return
		}
	}
}

// fetch starts (or joins) the fetch of one kind for domain.
func (m *Manager) fetch(kind srccache.Kind, domain string) <-chan singleflight.Result {
	return m.sf.DoChan(string(kind)+" "+domain, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		old := m.cfg.Cache.Get(kind, domain)
		var r *srccache.Record
		switch kind {
		case srccache.KindDANE:
			r = m.refreshDANE(ctx, domain, old)
		case srccache.KindMTASTS:
			r = m.refreshMTASTS(ctx, domain, old)
		}
		if r.Error != "" {
			m.stats.fetchError(kind)
		}
		if err := m.cfg.Cache.Put(r); err != nil {
			m.log.Warn("source cache", "error", err)
		}
		if m.cfg.OnPolicy != nil && r.MTASTS != nil && r.MTASTS.Policy != nil && r.MTASTS.Policy.Mode != mtasts.ModeNone {
			m.cfg.OnPolicy(r)
		}
		return nil, nil
	})
}

// touch records that domain was looked up now, at most once a minute.
func (m *Manager) touch(domain string, now time.Time) {
	sec := now.Unix()
	if v, ok := m.used.Load(domain); ok {
		if u := v.(*atomic.Int64); u.Load() < sec-60 {
			u.Store(sec)
		}
		return
	}
	u := new(atomic.Int64)
	u.Store(sec)
	m.used.Store(domain, u)
}

// usedSince reports whether domain was looked up at or after t (with the
// minute's granularity of touch).
func (m *Manager) usedSince(domain string, t time.Time) bool {
	v, ok := m.used.Load(domain)
	return ok && v.(*atomic.Int64).Load() >= t.Unix()-60
}

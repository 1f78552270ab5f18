package sources

import (
	"context"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// Register hands the refresh of DANE and MTA-STS records to the cache's
// one Scheduler: a due record whose domain was looked up since its last
// check is fetched again (at most Config.Workers at a time per kind); a
// due record nobody looked up is left until it expires, and then deleted,
// so a policy stays in force for its whole max_age without costing
// refreshes — until a lookup finds it unchecked for an hour and queues
// its refresh (see Resolve). Records of a source switched off are deleted. Call it before
// the Scheduler runs.
func (m *Manager) Register(s *srccache.Scheduler) {
	m.sched = s
	for _, k := range []srccache.Kind{srccache.KindDANE, srccache.KindMTASTS} {
		s.Handle(k, srccache.KindOptions{Workers: m.cfg.Workers, Lease: fetchTimeout + time.Minute},
			func(ctx context.Context, _ string, r *srccache.Record) {
				if r != nil {
					m.refreshDue(ctx, r, time.Now())
				}
			})
	}
	s.Tick(m.sweepUsed)
}

// daneMemory is how long an idle DANE record that found TLSA records (or
// deferred because DNSSEC says they exist) is kept after it expires.
const daneMemory = 7 * 24 * time.Hour

// recheck queues the refresh of a valid record a lookup found unchecked
// for longer than txtRecheck: one parked until its expiry while nobody
// looked the domain up, whose policy may have changed since.
func (m *Manager) recheck(r *srccache.Record, now time.Time) {
	if m.sched != nil && r.Valid(now) && now.Sub(r.Checked) > txtRecheck {
		m.sched.Queue(r.Kind, r.Domain)
	}
}

// refreshDue handles one due record and waits for its refresh.
func (m *Manager) refreshDue(ctx context.Context, r *srccache.Record, now time.Time) {
	if !m.enabled(r.Kind) {
		_ = m.cfg.Cache.Delete(r.Kind, r.Domain)
		return
	}
	if !m.usedSince(r.Domain, r.Checked) {
		switch cur := m.cfg.Cache.Held(r); {
		case cur == nil: // replaced meanwhile: the new record keeps its own schedule
		case !cur.Valid(now) && knownDANE(cur) && now.Before(cur.Expires.Add(daneMemory)):
			// Expired, it answers nothing; kept, a later first lookup that
			// fails or times out defers on its word (RFC 7672 §2.2).
			_ = m.cfg.Cache.Reschedule(cur, cur.Expires.Add(daneMemory))
		case !cur.Valid(now):
			_ = m.cfg.Cache.Delete(r.Kind, r.Domain)
			m.used.Delete(r.Domain)
		default:
			_ = m.cfg.Cache.Reschedule(cur, cur.Expires)
		}
		return
	}
	select {
	case <-m.fetch(r.Kind, r.Domain):
	case <-ctx.Done():
	}
}

func (m *Manager) enabled(k srccache.Kind) bool {
	switch k {
	case srccache.KindDANE:
		return m.cfg.DANE != nil
	case srccache.KindMTASTS:
		return m.cfg.MTASTS != nil
	}
	return false
}

// sweepUsed forgets the lookup times of domains the cache no longer holds
// (evicted, or deleted while a lookup was recording its time), so that
// they cannot accumulate.
func (m *Manager) sweepUsed() {
	m.used.Range(func(k, _ any) bool {
		d := k.(string)
		if m.cfg.Cache.Get(srccache.KindDANE, d) == nil && m.cfg.Cache.Get(srccache.KindMTASTS, d) == nil {
			m.used.Delete(d)
		}
		return true
	})
}

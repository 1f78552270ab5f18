package sources

import (
	"context"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// maxSleep bounds the scheduler's wait, so that a clock change or a
// missed wake-up delays a refresh by a minute at most.
const maxSleep = time.Minute

// Run is the refresh scheduler: it walks the cache's refresh index and
// refreshes the records that are due and whose domain was looked up since
// their last check, at most Config.Workers at a time. A due record
// nobody looked up is left until it expires, and then deleted: a policy
// stays in force for its whole max_age without costing refreshes. Run
// also saves the cache every Config.SaveEvery when it changed. It returns
// when ctx is done.
func (m *Manager) Run(ctx context.Context) error {
	save := time.NewTicker(m.cfg.SaveEvery)
	defer save.Stop()
	for {
		now := time.Now()
		due, next := m.cfg.Cache.Due(now, 256)
		m.refreshBatch(ctx, due, now)
		if len(due) == 256 {
			continue
		}
		wait := maxSleep
		if !next.IsZero() {
			wait = min(max(time.Until(next), 0), maxSleep)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-m.cfg.Cache.Wake():
			t.Stop()
		case <-save.C:
			t.Stop()
			m.saveIfDirty()
			m.sweepUsed()
		}
	}
}

// refreshBatch handles the due records and waits for their refreshes.
func (m *Manager) refreshBatch(ctx context.Context, due []*srccache.Record, now time.Time) {
	sem := make(chan struct{}, m.cfg.Workers)
	var wg sync.WaitGroup
	for _, r := range due {
		if ctx.Err() != nil {
			break
		}
		if !m.enabled(r.Kind) {
			_ = m.cfg.Cache.Delete(r.Kind, r.Domain)
			continue
		}
		if !m.usedSince(r.Domain, r.Checked) {
			if !r.Valid(now) {
				_ = m.cfg.Cache.Delete(r.Kind, r.Domain)
				m.used.Delete(r.Domain)
			} else if r.Refresh.Before(r.Expires) {
				_ = m.cfg.Cache.Reschedule(r, r.Expires)
			}
			m.dirty.Store(true)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			select {
			case <-m.fetch(r.Kind, r.Domain):
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
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
		if d := k.(string); len(m.cfg.Cache.ByDomain(d)) == 0 {
			m.used.Delete(d)
		}
		return true
	})
}

// saveIfDirty snapshots the cache if it changed since the last save.
func (m *Manager) saveIfDirty() {
	if !m.dirty.Swap(false) {
		return
	}
	if err := m.cfg.Cache.Save(); err != nil {
		m.log.Warn("saving source cache", "error", err)
	}
}

// Save snapshots the cache now (at shutdown).
func (m *Manager) Save() error {
	m.dirty.Store(false)
	return m.cfg.Cache.Save()
}

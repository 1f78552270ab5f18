package srccache

import (
	"sync/atomic"
	"time"
)

// A result's last lookup decides whether it is refreshed (used within
// IdleAfter) or dropped once stale. Records are immutable, and rewriting
// one per lookup would cost a write transaction on every lookup's path,
// so the lookups are kept here, per target, at minute granularity, and
// written into Record.Used whenever the record is written.

// sweepEvery is how often the last-lookup map drops targets the cache no
// longer holds.
const sweepEvery = time.Hour

// touch notes a lookup of key, whose record exists, at now. It allocates
// only for a target whose record was neither written nor restored here.
func (p *Probes) touch(key string, now time.Time) {
	m := now.Unix() / 60
	p.umu.RLock()
	u := p.used[key]
	p.umu.RUnlock()
	if u == nil {
		p.umu.Lock()
		if u = p.used[key]; u == nil {
			u = new(atomic.Int64)
			p.used[key] = u
		}
		p.umu.Unlock()
	}
	if u.Load() < m {
		u.Store(m)
	}
}

// lastUsed is key's last lookup: the later of the one noted here and r's
// Used (a restored record's).
func (p *Probes) lastUsed(key string, r *Record) time.Time {
	last := r.Used
	p.umu.RLock()
	u := p.used[key]
	p.umu.RUnlock()
	if u != nil {
		if t := time.Unix(u.Load()*60, 0); t.After(last) {
			last = t
		}
	}
	return last
}

// forget drops key's last lookup (its record is gone).
func (p *Probes) forget(key string) {
	p.umu.Lock()
	delete(p.used, key)
	p.umu.Unlock()
}

// sweep, at most once per sweepEvery, drops the last lookups of targets
// whose record is gone (a lookup racing with a removal may leave one) and
// writes the newer ones into their records: the snapshot then keeps them,
// and eviction (earliest Expires first) takes the results least recently
// looked up, to within sweepEvery.
func (p *Probes) sweep(now time.Time) {
	next := p.nextSweep.Load()
	if now.UnixNano() < next || !p.nextSweep.CompareAndSwap(next, now.Add(sweepEvery).UnixNano()) {
		return
	}
	var gone, newer []string // found under the read lock: lookups go on meanwhile
	p.umu.RLock()
	for key, u := range p.used {
		switch r := p.c.Get(KindProbe, key); {
		case r == nil:
			gone = append(gone, key)
		case time.Unix(u.Load()*60, 0).After(r.Used):
			newer = append(newer, key)
		}
	}
	p.umu.RUnlock()
	for _, key := range gone {
		if p.c.Get(KindProbe, key) == nil {
			p.forget(key)
		}
	}
	for _, key := range newer {
		p.wmu.Lock()
		if r := p.c.Get(KindProbe, key); r != nil {
			nr := probeRecord(r.Probe, p.lastUsed(key, r), p.o.IdleAfter)
			nr.Refresh = r.Refresh // the scheduler's, maybe a lease
			if err := p.c.Put(nr); err != nil {
				p.log.Error("probe cache: last lookup not stored", "target", key, "error", err)
			}
		}
		p.wmu.Unlock()
	}
}

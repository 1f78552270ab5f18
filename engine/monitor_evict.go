package engine

import (
	"container/heap"
	"time"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// A table with more monitored entries than the cache's bound for watch
// records still has each checked every interval, in turn: the records
// checked longest ago are evicted (see watchKeep), and their entries wait
// here, a key and a time each, until their next check is due; then they
// get a record again.

// requeue is a min-heap of evicted records by next check (Refresh).
type requeue []*srccache.Record

func (q requeue) Len() int           { return len(q) }
func (q requeue) Less(i, j int) bool { return q[i].Refresh.Before(q[j].Refresh) }
func (q requeue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *requeue) Push(x any)        { *q = append(*q, x.(*srccache.Record)) }
func (q *requeue) Pop() any {
	old := *q
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return r
}

// evicted hears of watch records the cache dropped to stay within its
// bound: the key (a table entry, a recipients:/senders: floor or an
// MTA-STS domain) waits in the requeue for its next check. It runs under
// the cache's write lock: no call into the cache.
func (m *Monitor) evicted(r *srccache.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.fresh, r.Domain)
	if m.requeued == nil {
		m.requeued = map[string]*srccache.Record{}
	}
	m.requeued[r.Domain] = r // an earlier eviction's entry is stale now
	heap.Push(&m.requeue, r)
}

// dueRequeuedLocked returns new records for the evicted entries whose
// next check is due (at most newWindow awaiting a check), keeping what
// their last probe found. An entry that left the table, or got a record
// meanwhile, is dropped. m.mu is held.
func (m *Monitor) dueRequeuedLocked() []*srccache.Record {
	now := m.Now()
	var take []pending
	for m.requeue.Len() > 0 && len(m.fresh) < newWindow && !m.requeue[0].Refresh.After(now) {
		r := heap.Pop(&m.requeue).(*srccache.Record)
		if m.requeued[r.Domain] != r {
			continue // evicted again since, with a later check
		}
		delete(m.requeued, r.Domain)
		if m.watches.Get(srccache.KindWatch, r.Domain) != nil || m.fresh[r.Domain] {
			continue
		}
		w, ok := m.resolveLocked(r.Domain)
		if !ok {
			continue
		}
		m.fresh[r.Domain] = true
		take = append(take, pending{w: w, prev: r, evicted: true})
	}
	// Due now: the next slots of a spread of their own, so that many
	// evicted at once are not probed at once.
	sl := slots{start: now, gap: passGap(len(take), time.Duration(spanShare*float64(m.Interval)), m.MaxPerMinute, m.maxGap)}
	return sl.records(m, take)
}

package probe

import (
	"context"
	"errors"
	"sync"
	"time"
)

// dropLogEvery is the least time between two "probe queue full" log
// lines: each line counts the probes dropped since the last.
const dropLogEvery = 10 * time.Second

// Schedule queues target for a probe by Run, unless it is already queued
// or being probed. It never blocks.
func (c *Cache) Schedule(target string) {
	key, err := Canonical(target)
	if err != nil {
		return
	}
	c.qmu.Lock()
	if c.pending[key] {
		c.qmu.Unlock()
		return
	}
	if len(c.queue) >= c.cfg.MaxQueue {
		c.qmu.Unlock()
		c.noteDropped(key)
		return
	}
	c.pending[key] = true
	c.queue = append(c.queue, key)
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// noteDropped counts a probe dropped on a full queue and logs at most one
// line per dropLogEvery: a flood of lookups must not become a flood of
// log lines.
func (c *Cache) noteDropped(key string) {
	c.dropped.Add(1)
	now := time.Now().UnixNano()
	next := c.nextDropLog.Load()
	if now < next || !c.nextDropLog.CompareAndSwap(next, now+int64(dropLogEvery)) {
		return
	}
	c.log.Warn("probe queue full, probes dropped", "dropped", c.dropped.Swap(0), "latest", key, "max_queue", c.cfg.MaxQueue)
}

// next takes the next queued target, waiting until there is one or ctx
// ends.
func (c *Cache) next(ctx context.Context) (string, bool) {
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			key := c.queue[0]
			c.queue[0] = ""
			c.queue = c.queue[1:]
			more := len(c.queue) > 0
			c.qmu.Unlock()
			if more { // pass the wake-up on to another worker
				select {
				case c.wake <- struct{}{}:
				default:
				}
			}
			return key, true
		}
		c.qmu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return "", false
		}
	}
}

func (c *Cache) finished(key string) {
	c.qmu.Lock()
	delete(c.pending, key)
	c.qmu.Unlock()
}

// Run probes scheduled targets, re-probes entries shortly before they
// expire, drops idle ones and persists changes, until ctx ends; then it
// saves a last time and returns that save's error.
func (c *Cache) Run(ctx context.Context) error {
	if c.cfg.Probe == nil {
		return errors.New("probe cache: no Probe function configured")
	}
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				key, ok := c.next(ctx)
				if !ok {
					return
				}
				r, err := c.cfg.Probe(ctx, key)
				c.finished(key)
				if err != nil {
					if ctx.Err() == nil {
						c.log.Warn("probe failed", "target", key, "error", err)
					}
					continue
				}
				c.Put(r)
			}
		}()
	}
	scan := time.NewTicker(c.cfg.ScanEvery)
	defer scan.Stop()
	save := time.NewTicker(c.cfg.SaveEvery)
	defer save.Stop()
	c.scan()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return c.saveIfDirty()
		case <-scan.C:
			c.scan()
		case <-save.C:
			if err := c.saveIfDirty(); err != nil {
				c.log.Error("saving probe cache", "error", err)
			}
		}
	}
}

// scan schedules the entries due for a refresh and drops idle expired ones.
func (c *Cache) scan() {
	now := c.cfg.Now()
	var due []string
	c.mu.Lock()
	for key, e := range c.entries {
		idle := now.Sub(time.Unix(0, e.lastUsed.Load())) > c.cfg.IdleAfter
		r := e.res
		if idle {
			if !r.Fresh(now) {
				delete(c.entries, key)
				c.dirty.Store(true)
			}
			continue
		}
		// Refresh once 90% of the lifetime has passed, so that a used
		// entry is replaced before it goes stale.
		if refreshAt := r.Expires.Add(-r.Expires.Sub(r.Time) / 10); !now.Before(refreshAt) {
			due = append(due, key)
		}
	}
	c.mu.Unlock()
	for _, key := range due {
		c.Schedule(key)
	}
}

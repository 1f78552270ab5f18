package engine

import (
	"context"
	"slices"
	"sync"
	"time"
)

// CheckAll probes every monitored entry of the current table now (the
// table's outbound entries and recipients:/senders: floors; testing ones
// first), at most Workers at once, publishes events for its findings and
// returns them. It is `check --probe`: synchronous, without the
// scheduler or the watch records.
func (m *Monitor) CheckAll(ctx context.Context) []Finding {
	m.init()
	s := m.Engine.Store()
	if s == nil {
		return nil
	}
	var ws []watch
	for _, e := range s.Table().Outbound {
		if probeable(e) {
			ws = append(ws, outboundWatch(e))
		}
	}
	ws = append(ws, addressWatches(s)...)
	slices.SortStableFunc(ws, func(a, b watch) int {
		switch {
		case a.e.Testing == b.e.Testing:
			return 0
		case a.e.Testing:
			return -1
		}
		return 1
	})
	start := time.Now()
	var (
		mu       sync.Mutex
		st       monitorStats
		findings []Finding
		wg       sync.WaitGroup
	)
	work := make(chan watch)
	for range m.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				fs, res, err := m.check(ctx, w)
				if ctx.Err() != nil {
					continue
				}
				mu.Lock()
				st.add(res, fs, err)
				findings = append(findings, fs...)
				mu.Unlock()
			}
		}()
	}
feed:
	for _, w := range ws {
		select {
		case work <- w:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if ctx.Err() == nil {
		m.Logger.Info("monitor check finished", "entries", len(ws), "probed", st.Probed, "findings", st.Findings,
			"inconclusive", st.Inconclusive, "rate_limited", st.RateLimited, "failed", st.Failed,
			"duration", time.Since(start).Round(time.Millisecond))
	}
	return findings
}

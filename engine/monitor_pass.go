package engine

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// never) for ordering.
type queued struct {
	w    watch
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
	var ws []watch
	for _, e := range s.Table().Outbound {
		if probeable(e) {
			ws = append(ws, outboundWatch(e))
		}
	}
	ws = append(ws, addressWatches(s)...)
	out := make([]queued, 0, len(ws))
	m.mu.Lock()
	m.passNo++
	for _, w := range ws {
		q := queued{w: w}
		if cs, ok := m.checked[w.key]; ok {
			cs.pass = m.passNo
			m.checked[w.key] = cs
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
		if a.w.e.Testing != b.w.e.Testing {
			if a.w.e.Testing {
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
	w  watch
	st *passState
}

// passState is the running count of one pass.
type passState struct {
	passStats
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
		// A free worker takes the entry even when this goroutine woke
		// after end (a slot just before it, a loaded machine): only an
		// entry no worker could take by end is not reached.
		select {
		case work <- job{w: q.w, st: st}:
			handed++
			continue
		default:
		}
		select {
		case work <- job{w: q.w, st: st}:
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
// refused probes) and calls onPass.
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
	if m.onPass != nil {
		m.onPass(st.passStats)
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
		fs, res, err := m.checkOne(ctx, j.w, j.st == nil)
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

package engine

import (
	"context"
	"errors"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// monitorStats sums up the monitor's checks since a time.
type monitorStats struct {
	since time.Time
	// Probed counts probes that returned a result; Findings the keys
	// among them that raised an event, Inconclusive those whose result
	// says nothing about TLS (temporary failure, unreachable).
	Probed, Findings, Inconclusive int
	// RateLimited counts probes the prober refused under its per-minute
	// cap, Failed other probe errors. Neither counts as probed.
	RateLimited, Failed int
	firstErr            error
}

// add counts one check.
func (st *monitorStats) add(res *probe.Result, fs []Finding, err error) {
	switch {
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
	}
}

// count adds one scheduled check to the summary and, once summaryEvery
// has passed since the last, logs the summary.
func (m *Monitor) count(ctx context.Context, res *probe.Result, fs []Finding, err error) {
	now := m.Now()
	m.mu.Lock()
	m.st.add(res, fs, err)
	st := m.st
	due := now.Sub(st.since) >= m.summaryEvery
	if due {
		m.st = monitorStats{since: now}
	}
	m.mu.Unlock()
	if due && ctx.Err() == nil {
		m.summarize(st, now)
	}
}

// behindBy is how late a check must be to count as behind in the
// summary: later than the scheduler's usual delay.
const behindBy = time.Minute

// summarize logs one line for the checks since st.since: how many keys
// have a record, probed, found failing, how many checks are more than a
// minute overdue (the rate or the workers do not keep up) and how many
// new entries still wait for their first (backlog).
func (m *Monitor) summarize(st monitorStats, now time.Time) {
	behind, _ := m.watches.DueKind(srccache.KindWatch, now.Add(-behindBy), m.watches.Count(srccache.KindWatch)+1)
	m.mu.Lock()
	backlog := len(m.backlog)
	m.mu.Unlock()
	args := []any{"keys", m.watches.Count(srccache.KindWatch), "probed", st.Probed, "findings", st.Findings,
		"inconclusive", st.Inconclusive, "rate_limited", st.RateLimited, "failed", st.Failed,
		"behind", len(behind), "backlog", backlog, "since", st.since.Round(time.Second)}
	switch {
	case st.RateLimited > 0 || len(behind) > 0:
		m.Logger.Warn("monitor behind: the probe rate limit or the workers leave checks overdue; the most overdue come first (to check every key each interval, raise probe.max_per_minute, probe.monitor_workers or probe.interval)", args...)
	case st.Failed > 0:
		m.Logger.Warn("monitor checks with probe errors", append(args, "error", st.firstErr)...)
	default:
		m.Logger.Info("monitor checks", args...)
	}
}

package outbound

import (
	"sort"
	"time"
)

// DomainReport is one destination domain's row of the outbound report.
type DomainReport struct {
	Domain string `json:"domain"`
	Counts
	// Stuck is how many messages are deferred by TLS policy now, since
	// StuckSince, for StuckReason.
	Stuck       int        `json:"stuck,omitempty"`
	StuckSince  *time.Time `json:"stuck_since,omitempty"`
	StuckReason string     `json:"stuck_reason,omitempty"`
}

// Report returns the counts of every domain over the UTC days from since's
// to today, with the domains stuck now, sorted by domain.
func (t *Tracker) Report(since time.Time) []DomainReport {
	first := since.UTC().Format(time.DateOnly)
	t.mu.Lock()
	defer t.mu.Unlock()
	rows := map[string]*DomainReport{}
	row := func(d string) *DomainReport {
		r := rows[d]
		if r == nil {
			r = &DomainReport{Domain: d}
			rows[d] = r
		}
		return r
	}
	for day, doms := range t.days {
		if day < first {
			continue
		}
		for d, c := range doms {
			row(d).merge(c)
		}
	}
	for d, st := range t.stuck {
		r := row(d)
		r.Stuck, r.StuckReason = len(st.Msgs), st.Reason
		since := st.Since
		r.StuckSince = &since
	}
	out := make([]DomainReport, 0, len(rows))
	for _, r := range rows {
		r.Failures = nil // TLS-RPT detail, not the report's
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// Day returns a copy of the counts of one UTC day ("2006-01-02") by domain.
func (t *Tracker) Day(day string) map[string]Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]Counts{}
	for d, c := range t.days[day] {
		var cp Counts
		cp.merge(c)
		out[d] = cp
	}
	return out
}

// Reported returns the last UTC day TLS-RPT reports were sent for.
func (t *Tracker) Reported() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reported
}

// SetReported records that the reports of day were sent (saved with the
// state).
func (t *Tracker) SetReported(day string) {
	t.mu.Lock()
	t.reported, t.dirty = day, true
	t.mu.Unlock()
}

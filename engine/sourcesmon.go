package engine

import (
	"context"

	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// SourceEntry returns the entry the monitor checks for a domain's MTA-STS
// policy: its Postfix policy (for a testing policy, what enforcing it
// would answer, with Testing set), sourced "MTA-STS policy id <id>". It
// is nil for a record without an enforce or testing policy.
func SourceEntry(r *srccache.Record) *store.Entry {
	if r == nil || r.MTASTS == nil || r.MTASTS.Policy == nil {
		return nil
	}
	p := r.MTASTS.Policy
	if p.Mode != mtasts.ModeEnforce && p.Mode != mtasts.ModeTesting {
		return nil
	}
	pol, err := store.ParsePolicy(p.EnforcedPostfixPolicy())
	if err != nil {
		return nil
	}
	return &store.Entry{Key: r.Domain, Policy: pol, Testing: p.Mode == mtasts.ModeTesting,
		Source: store.Source{File: "MTA-STS policy id " + r.MTASTS.ID}}
}

// CheckSource probes the MX hosts of a domain the sources decide (an
// entry from SourceEntry) unless it was probed within the interval, and
// publishes what enforcing its policy would do, as for a table entry: an
// MX certificate that would fail the policy (expired, wrong name,
// untrusted, no STARTTLS) is an event and an alert before mail is stuck.
func (m *Monitor) CheckSource(ctx context.Context, e *store.Entry) ([]Finding, error) {
	m.init()
	if e == nil || !probeable(e) {
		return nil, nil
	}
	w := outboundWatch(e)
	w.key = "mta-sts:" + e.Key // not the table entry of the same key, if one appears
	fs, _, err := m.checkOne(ctx, w, true)
	return fs, err
}

package engine

import (
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

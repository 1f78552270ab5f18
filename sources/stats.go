package sources

import (
	"sync/atomic"

	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// Stats are the Manager's counters, for metrics.
type Stats struct {
	DANE, MTASTS, MTASTSTesting, None, Temp uint64 // answers by outcome
	DANEFetchErrors, MTASTSFetchErrors      uint64 // lookups or fetches that failed
	Timeouts                                uint64 // first lookups answered before their fetch ended
	CacheSize                               int
	Evicted                                 uint64
}

type stats struct {
	dane, mtasts, testing, none, temp atomic.Uint64
	daneErr, mtastsErr                atomic.Uint64
	timeouts                          atomic.Uint64
}

func (s *stats) answer(d Decision, err error) {
	switch {
	case err != nil:
		s.temp.Add(1)
	case d.Source == SourceDANE:
		s.dane.Add(1)
	case d.Source == SourceMTASTS:
		s.mtasts.Add(1)
	case d.Testing:
		s.testing.Add(1)
	default:
		s.none.Add(1)
	}
}

func (s *stats) fetchError(k srccache.Kind) {
	switch k {
	case srccache.KindDANE:
		s.daneErr.Add(1)
	case srccache.KindMTASTS:
		s.mtastsErr.Add(1)
	}
}

// Stats returns the counters and the cache's size.
func (m *Manager) Stats() Stats {
	return Stats{
		DANE: m.stats.dane.Load(), MTASTS: m.stats.mtasts.Load(), MTASTSTesting: m.stats.testing.Load(),
		None: m.stats.none.Load(), Temp: m.stats.temp.Load(),
		DANEFetchErrors: m.stats.daneErr.Load(), MTASTSFetchErrors: m.stats.mtastsErr.Load(),
		Timeouts:  m.stats.timeouts.Load(),
		CacheSize: m.cfg.Cache.Count(srccache.KindDANE) + m.cfg.Cache.Count(srccache.KindMTASTS),
		Evicted:   m.cfg.Cache.EvictedKind(srccache.KindDANE) + m.cfg.Cache.EvictedKind(srccache.KindMTASTS),
	}
}

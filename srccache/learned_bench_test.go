package srccache

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// learnedSetup is a cache of 10,000 learned domains with fresh results.
func learnedSetup(tb testing.TB) (*Probes, []string) {
	tb.Helper()
	p := newProbes(tb, Options{}, 0, ProbesOptions{})
	now := time.Now()
	domains := make([]string, 10000)
	for i := range domains {
		domains[i] = fmt.Sprintf("d%05d.bench.test", i)
		p.Put(synthetic(domains[i], now, true))
	}
	return p, domains
}

// TestLearnedAllocFree: the learned-policy lookup, on every unlisted
// domain's path, allocates nothing for a cached domain.
func TestLearnedAllocFree(t *testing.T) {
	p, domains := learnedSetup(t)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, ok := p.Learned(domains[i%len(domains)]); !ok {
			t.Fatal("not learned")
		}
		i++
	}); n != 0 {
		t.Errorf("Learned allocates %v times per lookup", n)
	}
}

// BenchmarkLearned looks up learned policies of 10,000 cached domains
// from GOMAXPROCS goroutines (the engine's path for an unlisted domain
// with learning on: two Cache.Get calls and the last-lookup note).
func BenchmarkLearned(b *testing.B) {
	p, domains := learnedSetup(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			if _, _, ok := p.Learned(domains[i%len(domains)]); !ok {
				b.Fatal("not learned")
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

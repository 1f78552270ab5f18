package sources

import (
	"context"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
)

// BenchmarkResolveCached: a lookup answered from the source cache.
func BenchmarkResolveCached(b *testing.B) {
	e := newEnvB(b)
	ctx := context.Background()
	if d, err := e.m.Resolve(ctx, "sts.test"); err != nil || d.Source != SourceMTASTS {
		b.Fatalf("%+v %v", d, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.m.Resolve(ctx, "sts.test"); err != nil {
			b.Fatal(err)
		}
	}
}

func newEnvB(b *testing.B) *env {
	e := newEnvTB(b, 5*time.Second, "sts.test")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.sts.test"))
	e.dns.Add(b, `_mta-sts.sts.test. 300 IN TXT "v=STSv1; id=1"`)
	e.dns.Add(b, "mta-sts.sts.test. 300 IN A 127.0.0.1")
	return e
}

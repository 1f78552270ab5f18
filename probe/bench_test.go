package probe

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkProbe1000Domains probes 1,000 domains served by the in-process
// DNS server, spread over four local fake MX servers with STARTTLS and a
// valid certificate (every probe is a full session: banner, EHLO,
// STARTTLS, TLS handshake, certificate checks, EHLO, QUIT), with the
// default concurrency and no MaxPerMinute cap (at the default 120 a
// minute the batch would take over 8 minutes whatever the prober's
// speed). One op is the whole batch of 1,000; the target is under 10 s
// per batch.
func BenchmarkProbe1000Domains(b *testing.B) {
	const domains = 1000
	z, f := loopback(b)
	const nMX = 4
	for k := range nMX {
		ip := fmt.Sprintf("127.0.0.%d", 10+k)
		host := fmt.Sprintf("mx%d.bench.test", k)
		z.Add(b, fmt.Sprintf("%s. 300 IN A %s", host, ip))
		f.GoodMX(b, ip, time.Time{}, host)
	}
	targets := make([]string, domains)
	for i := range targets {
		d := fmt.Sprintf("d%04d.bench.test", i)
		targets[i] = d
		z.Add(b, fmt.Sprintf("%s. 300 IN MX 10 mx%d.bench.test.", d, i%nMX))
	}
	p := testProber(b, z, f, func(c *Config) {
		c.Timeout = DefaultTimeout
		c.Concurrency = 0   // the default
		c.MaxPerMinute = -1 // measure probing, not the start limit (DefaultMaxPerMinute)
	})
	if p.cfg.Concurrency != DefaultConcurrency {
		b.Fatalf("concurrency %d", p.cfg.Concurrency)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make(chan string, domains)
		for _, d := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := p.Probe(ctx, d)
				if err != nil || r.Status != StatusOK || !r.Levels[LevelVerify].OK {
					errs <- fmt.Sprintf("%s: %v %+v", d, err, r)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			b.Fatal(e)
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(domains*b.N)/elapsed.Seconds(), "domains/s")
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/1000domains")
}

package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/internal/logtext"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// benchRules generates n inbound rules over sender domains, subdomains,
// addresses, recipients and client networks.
func benchRules(n int) []*store.InboundRule {
	rules := make([]*store.InboundRule, 0, n)
	for i := range n {
		r := &store.InboundRule{Name: fmt.Sprintf("r%d", i), Require: "tls1.2", Action: "defer"}
		switch i % 5 {
		case 0:
			r.From = []string{fmt.Sprintf("d%d.example", i)}
		case 1:
			r.From = []string{fmt.Sprintf(".d%d.example", i)}
		case 2:
			r.From = []string{fmt.Sprintf("user@d%d.example", i)}
		case 3:
			r.To = []string{fmt.Sprintf("inbox%d@ourcorp.example", i)}
		case 4:
			r.Client = []string{fmt.Sprintf("10.%d.%d.0/24", (i>>8)&255, i&255)}
			r.Require = "cert"
		}
		rules = append(rules, r)
	}
	return rules
}

// BenchmarkEvaluate10000Rules measures inbound rule evaluation of a
// recorded Postfix RCPT request against 10,000 rules: a sender matched by
// a domain rule, one matched by a .subdomain rule, and a request no rule
// matches.
func BenchmarkEvaluate10000Rules(b *testing.B) {
	ix := newInboundIndex(benchRules(10000))
	for _, bc := range []struct{ name, sender, rcpt string }{
		{"domain-hit", "alice@d5000.example", "bob@ourcorp.example"},
		{"subdomain-hit", "alice@mx.d5001.example", "bob@ourcorp.example"},
		{"miss", "alice@elsewhere.example", "bob@ourcorp.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := fromRequest(fixture(b, plain, "sender="+bc.sender, "recipient="+bc.rcpt))
			b.ReportAllocs()
			for b.Loop() {
				_ = ix.evaluate(&in, nil)
			}
		})
	}
}

// BenchmarkCheck10000Rules is the whole policyd.Handler path (counters
// and events included) for a request that passes and one that is deferred.
func BenchmarkCheck10000Rules(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("inbound:\n")
	for _, r := range benchRules(10000) {
		fmt.Fprintf(&sb, "  - name: %s\n    require: %s\n", r.Name, r.Require)
		for _, dim := range []struct {
			name string
			v    []string
		}{{"from", r.From}, {"to", r.To}, {"client", r.Client}} {
			if len(dim.v) > 0 {
				fmt.Fprintf(&sb, "    %s: [%q]\n", dim.name, dim.v[0])
			}
		}
	}
	// The daemon's text log handler (cmd/tlspolicyd newLogger), so that
	// the blocked request's line costs here what it costs in serve.
	e := New(buildStore(b, sb.String()), nil, nil, slog.New(logtext.New(io.Discard, nil)))
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		req  *policyd.Request
	}{
		{"pass", fixture(b, tls13, "sender=alice@d5000.example")},
		{"defer", fixture(b, plain, "sender=alice@d5000.example")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Check(ctx, bc.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The mix of cmd/tlspolicyd-bench: a sixth of the requests match no
	// rule (from ever new sender domains), the others one rule of each
	// kind, half of them unmet; every request a new message; in parallel.
	// Each goroutine has its own requests, as each connection has its own
	// Request in the server.
	reqs := make([][]*policyd.Request, runtime.GOMAXPROCS(0))
	for i := range reqs {
		reqs[i] = mixedRequests(b, uint64(i), 1024)
	}
	instances := make([]string, 1<<16)
	for i := range instances {
		instances[i] = fmt.Sprintf("%x.%x.0", i*7919, i)
	}
	b.Run("mix", func(b *testing.B) {
		var next, goroutine atomic.Uint64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			mine := reqs[goroutine.Add(1)%uint64(len(reqs))]
			for pb.Next() {
				n := next.Add(1)
				req := mine[n%uint64(len(mine))]
				req.Set("instance", instances[n%uint64(len(instances))])
				if _, err := e.Check(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// mixedRequests makes n requests against benchRules(10000) as
// cmd/tlspolicyd-bench draws them.
func mixedRequests(b *testing.B, seed uint64, n int) []*policyd.Request {
	r := rand.New(rand.NewPCG(7, seed))
	reqs := make([]*policyd.Request, n)
	for i := range reqs {
		kind := r.IntN(6)
		j := r.IntN(2000)*5 + kind
		met := r.IntN(2) == 0
		fx, o := plain, []string{"recipient=bob@ourcorp.example"}
		if met {
			fx = tls13
		}
		switch kind {
		case 0:
			o = append(o, fmt.Sprintf("sender=alice@d%d.example", j))
		case 1:
			o = append(o, fmt.Sprintf("sender=Bob@MX.d%d.example", j))
		case 2:
			o = append(o, fmt.Sprintf("sender=user@d%d.example", j))
		case 3:
			o = append(o, fmt.Sprintf("recipient=inbox%d@ourcorp.example", j))
		case 4:
			fx = tls13
			o = append(o, fmt.Sprintf("client_address=10.%d.%d.%d", j>>8&255, j&255, 1+r.IntN(254)))
			if met {
				o = append(o, "ccert_fingerprint="+fpTLS12)
			}
		default:
			o = append(o, fmt.Sprintf("sender=alice@nobody%d.example", r.IntN(1<<20)))
		}
		reqs[i] = fixture(b, fx, o...)
	}
	return reqs
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkObserve counts requests, one new message (instance) each, from
// parallel goroutines as the policy server's connections do: "known" from
// sender domains already counted, "beyond-cap" from ever new domains once
// the cap is reached, which all count as "(other)" (the bench's senders
// without a rule).
func BenchmarkObserve(b *testing.B) {
	instances := make([]string, 1<<16)
	for i := range instances {
		instances[i] = fmt.Sprintf("%x.%x.0", i*7919, i)
	}
	for _, bc := range []struct {
		name    string
		senders int
	}{{"known", 1000}, {"beyond-cap", 1 << 16}} {
		b.Run(bc.name, func(b *testing.B) {
			s := newStats(1000)
			senders := make([]string, bc.senders)
			for i := range senders {
				senders[i] = fmt.Sprintf("alice@d%d.example", i)
			}
			for _, sd := range senders[:1000] {
				s.Observe("", sd, "TLSv1.3")
			}
			var next atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1)
					s.Observe(instances[i%uint64(len(instances))], senders[i%uint64(len(senders))], "TLSv1.3")
				}
			})
		})
	}
}

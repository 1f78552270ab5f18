package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

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
	e := New(buildStore(b, sb.String()), nil, nil, quietLogger())
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
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkObserve counts requests from known sender domains, one new
// message (instance) each, from parallel goroutines as the policy server's
// connections do.
func BenchmarkObserve(b *testing.B) {
	s := NewStats(10000)
	senders := make([]string, 1000)
	for i := range senders {
		senders[i] = fmt.Sprintf("alice@d%d.example", i)
	}
	instances := make([]string, 1<<16)
	for i := range instances {
		instances[i] = fmt.Sprintf("%x.%x.0", i*7919, i)
	}
	for _, sd := range senders {
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
}

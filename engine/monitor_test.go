package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// TestMonitorReportsWhatEnforcementDoes probes real loopback MX servers
// through an in-process DNS zone and checks the events a postmaster gets.
func TestMonitorReportsWhatEnforcementDoes(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	farm.GoodMX(t, "127.0.0.11", time.Time{}, "mx.good.example")
	farm.PlainMX(t, "127.0.0.12")
	farm.GoodMX(t, "127.0.0.13", time.Now().Add(5*24*time.Hour), "mx.expiring.example")
	z.MX(t, "good.example", 10, "mx.good.example", "127.0.0.11")
	z.MX(t, "lawfirm.example", 10, "mx.lawfirm.example", "127.0.0.12")
	z.MX(t, "plainbank.example", 10, "mx.plainbank.example", "127.0.0.12")
	z.MX(t, "expiring.example", 10, "mx.expiring.example", "127.0.0.13")

	s := buildStore(t, `
outbound:
  good.example: verify
  .good.example: encrypt
  lawfirm.example:
    policy: encrypt
    testing: true
  plainbank.example: encrypt
  expiring.example: verify
  opportunistic.example: may
`)
	ev := events.NewRing(100)
	e := New(s, nil, ev, nil)
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid"})
	cache := probe.NewCache(probe.CacheConfig{Probe: p.Probe})
	m := &Monitor{Engine: e, Probe: p.Probe, Cache: cache}

	fs := m.CheckAll(context.Background())
	byKey := map[string][]Finding{}
	for _, f := range fs {
		byKey[f.Entry.Key] = append(byKey[f.Entry.Key], f)
	}
	if len(byKey["good.example"]) != 0 {
		t.Errorf("good.example: unexpected findings %+v", byKey["good.example"])
	}
	if f := byKey["lawfirm.example"]; len(f) != 1 || f[0].OK ||
		!strings.HasPrefix(f[0].Reason, "enforcing encrypt for lawfirm.example would defer mail: ") ||
		!strings.Contains(f[0].Reason, "STARTTLS") {
		t.Errorf("lawfirm.example (testing): %+v", f)
	}
	if f := byKey["plainbank.example"]; len(f) != 1 || !strings.HasPrefix(f[0].Reason, "mail to plainbank.example is deferred: policy encrypt cannot be met") {
		t.Errorf("plainbank.example (enforced): %+v", f)
	}
	if f := byKey["expiring.example"]; len(f) != 1 || f[0].Kind != events.CertExpiring || !f[0].OK ||
		!strings.Contains(f[0].Reason, "(in 5 days)") {
		t.Errorf("expiring.example: %+v", f)
	}
	for _, k := range []string{".good.example", "opportunistic.example"} {
		if _, probed := cache.Get(k); probed {
			t.Errorf("%s should not be probed", k)
		}
	}
	if r, ok := cache.Get("good.example"); !ok || r.Status != probe.StatusOK {
		t.Errorf("cache has no good result for good.example: %+v", r)
	}
	totals := ev.Totals()
	if totals[events.OutboundProbeFailed] != 2 || totals[events.CertExpiring] != 1 {
		t.Errorf("event totals = %v", totals)
	}
}

// TestLearnedPolicy: with learn: enforce, an unlisted domain whose probe
// shows STARTTLS on every MX answers encrypt; with learn: report or off,
// Postfix keeps getting NOTFOUND.
func TestLearnedPolicy(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	farm.GoodMX(t, "127.0.0.21", time.Time{}, "mx.tls.example")
	farm.PlainMX(t, "127.0.0.22")
	z.MX(t, "tls.example", 10, "mx.tls.example", "127.0.0.21")
	z.MX(t, "plain.example", 10, "mx.plain.example", "127.0.0.22")
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second, AllowPrivate: true, Roots: ca.Pool})
	cache := probe.NewCache(probe.CacheConfig{Probe: p.Probe})
	for _, d := range []string{"tls.example", "plain.example"} {
		r, err := p.Probe(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		cache.Put(r)
	}
	for _, tt := range []struct{ learn, key, want string }{
		{"enforce", "tls.example", "OK encrypt"},
		{"enforce", "TLS.Example.", "OK encrypt"},
		{"enforce", "plain.example", "NOTFOUND"},
		{"enforce", "never-probed.example", "NOTFOUND"},
		{"report", "tls.example", "NOTFOUND"},
		{"off", "tls.example", "NOTFOUND"},
	} {
		s := buildStore(t, "defaults:\n  learn: "+tt.learn+"\noutbound:\n  listed.example: verify\n")
		e := New(s, cache, nil, nil)
		if got := lookup(t, e, tt.key); got != tt.want {
			t.Errorf("learn %s: %s = %q, want %q", tt.learn, tt.key, got, tt.want)
		}
		if tt.learn == "enforce" && tt.want == "OK encrypt" {
			ans, _ := e.Resolve("tls_policy", tt.key)
			if ans.Step != "learned" || !strings.Contains(ans.Why, "STARTTLS") {
				t.Errorf("explain: step %q why %q", ans.Step, ans.Why)
			}
		}
	}
}

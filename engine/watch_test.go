package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// TestMonitorChecksAddressEntries: recipients: and senders: entries are
// probed by their domain, once per floor level, and a domain that cannot
// meet the floor is an event naming the addresses, as for outbound
// entries; .domain entries are not probed.
func TestMonitorChecksAddressEntries(t *testing.T) {
	ca := probetest.NewCA(t)
	z := probetest.NewZone(t)
	farm := probetest.NewFarm(t, ca)
	farm.GoodMX(t, "127.0.0.51", time.Time{}, "mx.good.example")
	farm.PlainMX(t, "127.0.0.52")
	z.MX(t, "partner.example", 10, "mx.partner.example", "127.0.0.52")
	z.MX(t, "audit.example", 10, "mx.audit.example", "127.0.0.52")
	z.MX(t, "good.example", 10, "mx.good.example", "127.0.0.51")
	z.MX(t, "origin.example", 10, "mx.origin.example", "127.0.0.52")
	s := buildStore(t, `
recipients:
  cfo@partner.example: encrypt
  ceo@partner.example: encrypt
  audit.example:
    policy: encrypt
    testing: true
  .sub.example: encrypt
  boss@good.example: encrypt
senders:
  compliance@origin.example: encrypt
`)
	ev := events.NewRing(100)
	e := New(s, nil, ev, nil)
	p := probe.New(probe.Config{Resolver: z.Addr, Port: farm.Port, Timeout: 3 * time.Second,
		AllowPrivate: true, Roots: ca.Pool, HELO: "test.invalid"})
	var inconclusive []string
	m := &Monitor{Engine: e, Probe: p.Probe, Logger: quietLogger(),
		OnInconclusive: func(e *store.Entry, why string) { inconclusive = append(inconclusive, e.Key+": "+why) }}
	fs := m.CheckAll(context.Background())
	got := map[string]string{}
	for _, f := range fs {
		got[f.Entry.Key] = f.Reason
	}
	for key, want := range map[string]string{
		"partner.example": "mail to cfo@partner.example, ceo@partner.example is deferred: policy encrypt cannot be met: mx.partner.example[127.0.0.52]",
		"audit.example":   "enforcing encrypt for audit.example would defer mail: mx.audit.example[127.0.0.52]",
		"origin.example":  "mail from compliance@origin.example to origin.example is deferred: policy encrypt cannot be met",
	} {
		if !strings.HasPrefix(got[key], want) {
			t.Errorf("%s: finding %q, want %q…", key, got[key], want)
		}
	}
	if len(fs) != 3 {
		t.Errorf("%d findings, want 3: %v", len(fs), got)
	}
	if len(inconclusive) != 0 {
		t.Errorf("inconclusive: %v", inconclusive)
	}
	rules := map[string]events.Event{}
	for _, x := range ev.Recent(100) {
		rules[x.Rule] = x
	}
	if x, ok := rules["recipients: cfo@partner.example, ceo@partner.example"]; !ok || x.Domain != "partner.example" ||
		x.Kind != events.OutboundProbeFailed || !strings.Contains(x.Source, ":3") {
		t.Errorf("recipients event: %+v (all: %v)", x, rules)
	}
	if x := rules["recipients: audit.example"]; x.Action != "testing" {
		t.Errorf("testing recipients entry's event: %+v", x)
	}
	if _, ok := rules["senders: compliance@origin.example"]; !ok {
		t.Errorf("no senders event: %v", rules)
	}
}

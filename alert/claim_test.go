package alert

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
)

// In a fleet, an alert another node claimed is not sent from this one; one
// this node claims is, and the claim names its kind and domain.
func TestClaimElsewhereNotSent(t *testing.T) {
	h := newHookStub(t)
	var mu sync.Mutex
	var asked []string
	claim := func(_ context.Context, kind, domain string, interval time.Duration) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, kind+" "+domain+" "+interval.String())
		return domain == "mine.example"
	}
	a := New(Config{Webhook: h.url, Delay: 10 * time.Millisecond, Interval: time.Hour, Claim: claim, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	a.Notify(events.Event{Kind: events.OutboundProbeFailed, Domain: "theirs.example", Reason: "no STARTTLS"})
	a.Notify(events.Event{Kind: events.OutboundProbeFailed, Domain: "mine.example", Reason: "no STARTTLS"})
	waitFor(t, "the claimed alert", func() bool { return a.Stats().Sent == 1 })
	waitFor(t, "the claim left to another node", func() bool { return a.Stats().ClaimedElsewhere == 1 })
	cancel()
	<-done
	p := h.payloads()
	if len(p) != 1 || len(p[0].Alerts) != 1 || p[0].Alerts[0].Domain != "mine.example" {
		t.Fatalf("sent %+v; want one alert, for mine.example", p)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != "outbound_probe_failed theirs.example 1h0m0s" {
		t.Errorf("claims asked: %q", asked)
	}
}

package alert

import (
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/events"
)

// TestOutboundLogTexts: the stuck-mail alert and the delivered-again
// notice (from Postfix's log) name the domain, the policy and its source;
// the probe's alert says it is the early warning.
func TestOutboundLogTexts(t *testing.T) {
	al := Alert{Event: events.Event{Kind: events.OutboundDeferred, Domain: "bank.example", Rule: "encrypt",
		Source: "table /etc/tlspolicyd/table/partners.yaml:3", Reason: "2 messages to bank.example deferred by TLS policy since …"}}
	describe(&al)
	if al.Title != "Mail to bank.example is stuck: deferred by TLS policy" || !strings.Contains(al.RecommendedAction, "weaken or remove the policy at table /etc/tlspolicyd/table/partners.yaml:3") {
		t.Errorf("stuck: %+v", al)
	}
	if got := policyLine(&al); got != "outbound policy encrypt, table /etc/tlspolicyd/table/partners.yaml:3" {
		t.Errorf("stuck policy line %q", got)
	}
	al = Alert{Event: events.Event{Kind: events.OutboundDelivered, Domain: "bank.example"}}
	describe(&al)
	if al.Title != "Mail to bank.example is delivered again" || policyLine(&al) != "outbound policy (none: Postfix's default)" {
		t.Errorf("delivered: %+v %q", al, policyLine(&al))
	}
	al = Alert{Event: events.Event{Kind: events.OutboundProbeFailed, Domain: "bank.example"}}
	describe(&al)
	if !strings.Contains(al.Explanation, "early warning of a probe") {
		t.Errorf("probe alert does not say it is the early warning: %q", al.Explanation)
	}
}

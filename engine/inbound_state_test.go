package engine

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/events"
)

// A request that is not request=smtpd_access_policy, or names a state
// smtpd never sends, cannot be decided: DUNNO, no event, no count, and one
// warning of each kind. At END-OF-MESSAGE, where Postfix ignores PREPEND,
// a testing rule's header becomes DUNNO, its event stays.
func TestUndecidableRequests(t *testing.T) {
	s := buildStore(t, `
inbound:
  - name: bank
    from: [bank.example]
    require: tls
  - name: pilot
    from: [pilot.example]
    require: tls
    testing: true
    header: X-TLS-Policy
`)
	ev := events.NewRing(10)
	var logBuf bytes.Buffer
	e := New(s, nil, ev, slog.New(slog.NewTextHandler(&logBuf, nil)))
	ctx := context.Background()
	for _, c := range []struct {
		name      string
		overrides []string
		want      string
	}{
		{"no request attribute", []string{"request=", "sender=a@bank.example"}, "DUNNO"},
		{"another request", []string{"request=junk_policy", "sender=a@bank.example"}, "DUNNO"},
		{"another request again", []string{"request=other", "sender=a@bank.example"}, "DUNNO"},
		{"unknown protocol state", []string{"protocol_state=BOGUS", "sender=a@bank.example"}, "DUNNO"},
		{"no protocol state", []string{"protocol_state=", "sender=a@bank.example"}, "DUNNO"},
		{"RCPT decides", []string{"sender=a@bank.example"}, "450 4.7.10 "},
		{"END-OF-MESSAGE enforces", []string{"protocol_state=END-OF-MESSAGE", "sender=a@bank.example"}, "450 4.7.10 "},
		{"testing header at RCPT", []string{"sender=p@pilot.example"}, "PREPEND X-TLS-Policy: "},
		{"testing header at END-OF-MESSAGE", []string{"protocol_state=END-OF-MESSAGE", "sender=p@pilot.example"}, "DUNNO"},
	} {
		a, err := e.Check(ctx, fixture(t, plain, c.overrides...))
		if err != nil || !strings.HasPrefix(string(a), c.want) || (c.want == "DUNNO" && a != "DUNNO") {
			t.Errorf("%s: Check = %q, %v; want %q", c.name, a, err, c.want)
		}
	}
	got := ev.Recent(0)
	if len(got) != 4 || got[0].Kind != events.InboundWouldBlock || got[0].Domain != "pilot.example" {
		t.Errorf("events = %+v; want only those of the four decided requests, the last a would-block", got)
	}
	log := logBuf.String()
	for _, want := range []string{"without request=smtpd_access_policy", "unknown protocol_state"} {
		if n := strings.Count(log, want); n != 1 {
			t.Errorf("warning %q logged %d times, want once:\n%s", want, n, log)
		}
	}
}

package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// daneHost is an MX host of a DANE test domain: the fake MX at ip:25 with
// a certificate for name, and its TLSA records (publishTLSA's kinds).
type daneHost struct {
	name, ip, tlsa string
	mx             *harness.FakeMX
}

// publishDANEDomain signs domain and publishes hosts as its MX hosts,
// preferences 10, 20, … in order, each a TLS fake MX on port 25 with a
// certificate from ca and the TLSA records its tlsa names (other: a key
// no MX has).
func publishDANEDomain(t *testing.T, res *sourcetest.Resolver, ca *harness.TestCA, other harness.CertFiles, domain string, hosts ...*daneHost) {
	t.Helper()
	for i, h := range hosts {
		requireListen(t, h.ip, 25)
		cert := ca.Issue(t, h.name)
		h.mx = harness.NewTLSFakeMX(t, cert, h.ip, harness.OnPort(25))
		publishTLSA(t, res, publishMX(t, res, domain, 10*(i+1), h.name, h.ip), h.tlsa, cert, other)
	}
}

// sentOverTLS checks that Postfix delivered qid's message for rcpt to h
// (its status line says sent, relay h) over a TLS connection it logged as
// trust ("Verified", "Untrusted"), and that h received it after STARTTLS.
func sentOverTLS(t *testing.T, log, qid, rcpt string, h *daneHost, trust string) {
	t.Helper()
	relay := h.name + "[" + h.ip + "]:25"
	if got := h.mx.ReceivedFor(rcpt); len(got) != 1 || !got[0].TLS {
		t.Errorf("%s received %+v, want one message over TLS", h.name, got)
	}
	if want := trust + " TLS connection established to " + relay; !strings.Contains(log, want) {
		t.Errorf("maillog lacks %q:\n%s", want, grepLines(log, "TLS connection"))
	}
	if st := statusLine(log, qid, rcpt); !strings.Contains(st, "relay="+relay+",") || !strings.Contains(st, "status=sent") {
		t.Errorf("status line %q, want status=sent, relay=%s", st, relay)
	}
}

// TestOutboundDANESomeMX: a domain only some of whose MX hosts have
// usable authenticated TLSA records gets the answer dane (not
// dane-only), and real Postfix 3.7 with the README's DANE settings
// (TestOutboundDANE's setup) does what RFC 7672 asks of it:
//   - dane-some.test, the preferred MX with a matching TLSA 3 1 1 record,
//     the second with none: delivered to the first, "Verified TLS
//     connection established" (no CA trusted);
//   - dane-fallback.test, the preferred MX with a TLSA record of another
//     key, the second with none (authenticated denial): Postfix compares
//     the first's certificate, refuses it ("no matching DANE TLSA
//     records", "QID: Server certificate not verified") without sending
//     MAIL, and delivers to the second with opportunistic TLS, "Untrusted
//     TLS connection established", after looking up its TLSA records.
//
// Answering may instead would deliver both to their first MX unverified;
// dane-only would defer dane-fallback.test.
func TestOutboundDANESomeMX(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	res, pfDNS, ns := daneDNS(t)
	ca := harness.NewTestCA(t, "tlspolicyd DANE test CA, trusted by nobody")
	other := ca.Issue(t, "someone-else.test")

	some1 := &daneHost{name: "mx1.dane-some.test", ip: "127.0.25.6", tlsa: "match"}
	some2 := &daneHost{name: "mx2.dane-some.test", ip: "127.0.25.7"}
	fall1 := &daneHost{name: "mx1.dane-fallback.test", ip: "127.0.25.8", tlsa: "other"}
	fall2 := &daneHost{name: "mx2.dane-fallback.test", ip: "127.0.25.9"}
	publishDANEDomain(t, res, ca, other, "dane-some.test", some1, some2)
	publishDANEDomain(t, res, ca, other, "dane-fallback.test", fall1, fall2)

	d, pf := startDANE(t, res, ns, nil)
	for _, dom := range []string{"dane-some.test", "dane-fallback.test"} {
		if got := answer(t, query(t, pf.ConfigDir, d, "tls_policy", dom)); got != "dane" {
			t.Errorf("tls_policy %s = %q, want dane", dom, got)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	const someRcpt, fallRcpt = "user@dane-some.test", "user@dane-fallback.test"
	someQID := send(ctx, t, pf, "sender@origin.example", someRcpt)
	fallQID := send(ctx, t, pf, "sender@origin.example", fallRcpt)
	for _, qid := range []string{someQID, fallQID} {
		if err := pf.WaitGone(ctx, qid, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	log := pf.Log()

	t.Run("dane-some.test", func(t *testing.T) {
		sentOverTLS(t, log, someQID, someRcpt, some1, "Verified")
		if n := some2.mx.Sessions(); n != 0 {
			t.Errorf("second MX saw %d SMTP sessions, want none", n)
		}
	})

	t.Run("dane-fallback.test", func(t *testing.T) {
		if fall1.mx.TLSHandshakes() == 0 {
			t.Errorf("no TLS handshake with the preferred MX: Postfix did not get to compare its TLSA records")
		}
		if m := fall1.mx.Mails(); len(m) != 0 {
			t.Errorf("the preferred MX, whose TLSA records do not match, received MAIL: %+v", m)
		}
		for _, want := range []string{
			"server certificate verification failed for mx1.dane-fallback.test[127.0.25.8]:25: num=65:no matching DANE TLSA records",
			fallQID + ": Server certificate not verified",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("maillog lacks %q:\n%s", want, grepLines(log, "dane-fallback"))
			}
		}
		sentOverTLS(t, log, fallQID, fallRcpt, fall2, "Untrusted")
		// Under dane, Postfix looked for the second MX's TLSA records
		// (and found an authenticated denial) before going opportunistic.
		if !pfDNS.asked("_25._tcp.mx2.dane-fallback.test", "TLSA") {
			t.Errorf("Postfix never asked _25._tcp.mx2.dane-fallback.test TLSA")
		}
	})
}

// TestOutboundDANEWithoutDNSSEC: Postfix whose smtp_dns_support_level is
// left unset (Postfix's default: DNS lookups without DNSSEC) cannot use
// the daemon's DANE answers, which the daemon still gives (its resolver
// validates):
//   - dane-only (dane-nodnssec.test, its one MX's TLSA record matches):
//     Postfix logs "warning: dane-nodnssec.test: dane-only configured with
//     dnssec lookups disabled" and "warning: TLS policy lookup for
//     dane-nodnssec.test/mx.dane-nodnssec.test: client TLS configuration
//     problem", defers relay=none, dsn=4.7.5 "client TLS configuration
//     problem" and never connects to the MX;
//   - dane (dane-nodnssec-some.test, the preferred MX's TLSA record
//     matches, the second has none): Postfix logs "warning:
//     dane-nodnssec-some.test: dane configured with dnssec lookups
//     disabled" and delivers to the preferred MX unauthenticated,
//     "Untrusted TLS connection established", as for may.
//
// The README names these lines so that the misconfiguration can be
// recognised.
func TestOutboundDANEWithoutDNSSEC(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	res, _, ns := daneDNS(t)
	ca := harness.NewTestCA(t, "tlspolicyd DANE test CA, trusted by nobody")
	other := ca.Issue(t, "someone-else.test")
	only := &daneHost{name: "mx.dane-nodnssec.test", ip: "127.0.25.10", tlsa: "match"}
	some1 := &daneHost{name: "mx1.dane-nodnssec-some.test", ip: "127.0.25.11", tlsa: "match"}
	some2 := &daneHost{name: "mx2.dane-nodnssec-some.test", ip: "127.0.25.12"}
	publishDANEDomain(t, res, ca, other, "dane-nodnssec.test", only)
	publishDANEDomain(t, res, ca, other, "dane-nodnssec-some.test", some1, some2)

	d, pf := startDANE(t, res, ns, map[string]string{"smtp_dns_support_level": ""})
	for dom, want := range map[string]string{"dane-nodnssec.test": "dane-only", "dane-nodnssec-some.test": "dane"} {
		if got := answer(t, query(t, pf.ConfigDir, d, "tls_policy", dom)); got != want {
			t.Errorf("tls_policy %s = %q, want %q", dom, got, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	const onlyRcpt, someRcpt = "user@dane-nodnssec.test", "user@dane-nodnssec-some.test"
	onlyQID := send(ctx, t, pf, "sender@origin.example", onlyRcpt)
	someQID := send(ctx, t, pf, "sender@origin.example", someRcpt)

	t.Run("dane-only", func(t *testing.T) {
		r, err := pf.WaitDeferred(ctx, onlyQID, onlyRcpt, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		log := pf.Log()
		if !strings.Contains(r.DelayReason, "client TLS configuration problem") {
			t.Errorf("delay_reason %q, want %q", r.DelayReason, "client TLS configuration problem")
		}
		if st := statusLine(log, onlyQID, onlyRcpt); !strings.Contains(st, "relay=none, ") || !strings.Contains(st, "dsn=4.7.5, status=deferred (client TLS configuration problem)") {
			t.Errorf("status line %q, want relay=none, dsn=4.7.5, status=deferred (client TLS configuration problem)", st)
		}
		for _, want := range []string{
			"warning: dane-nodnssec.test: dane-only configured with dnssec lookups disabled",
			"warning: TLS policy lookup for dane-nodnssec.test/mx.dane-nodnssec.test: client TLS configuration problem",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("maillog lacks %q:\n%s", want, grepLines(log, "warning"))
			}
		}
		if n := only.mx.Sessions(); n != 0 {
			t.Errorf("the MX saw %d SMTP sessions, want none", n)
		}
	})

	t.Run("dane", func(t *testing.T) {
		if err := pf.WaitGone(ctx, someQID, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		log := pf.Log()
		sentOverTLS(t, log, someQID, someRcpt, some1, "Untrusted")
		const warning = "warning: dane-nodnssec-some.test: dane configured with dnssec lookups disabled"
		if !strings.Contains(log, warning) {
			t.Errorf("maillog lacks %q:\n%s", warning, grepLines(log, "warning"))
		}
		if strings.Contains(log, "Verified TLS connection established to mx1.dane-nodnssec-some.test") {
			t.Errorf("Postfix verified the MX by DANE without DNSSEC lookups:\n%s", grepLines(log, "TLS connection"))
		}
	})
}

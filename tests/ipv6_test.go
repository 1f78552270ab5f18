package tests

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/e2e"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
)

// TestIPv6NextHop: Postfix asks about a next hop that is an IPv6 address
// literal as "[IPv6:::1]" (case as in the address, measured here); the
// table's "[ipv6:::1]" entry answers it, through postmap and through a
// real delivery: mail to user@[IPv6:::1] is held for TLS at an MX on ::1
// without STARTTLS, while mail to an unlisted IPv4 literal is delivered.
func TestIPv6NextHop(t *testing.T) {
	harness.RequirePostfix(t)
	t.Parallel()
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		e2e.Skipf(t, "no IPv6 loopback: %v", err)
	} else {
		_ = l.Close()
	}
	d, _ := startDaemon(t, `outbound:
  "[ipv6:::1]": encrypt
  "[ipv6:2001:db8::25]:587": verify
`, false)
	conf := harness.PostmapConfig(t)
	for key, want := range map[string]string{
		"[IPv6:::1]":              "encrypt", // as Postfix sends it
		"[ipv6:::1]":              "encrypt",
		"[IPv6:2001:DB8::25]:587": "verify",
		"[ipv6:2001:db8::25]":     "", // another port is another key
		"[IPv6:::2]":              "",
	} {
		if got := answer(t, query(t, conf, d, "tls_policy", key)); got != want {
			t.Errorf("postmap -q %s = %q, want %q", key, got, want)
		}
	}

	mx6 := harness.NewFakeMX(t, "::1")
	mx4 := harness.NewFakeMX(t, "127.0.0.2", harness.OnPort(mx6.Port))
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: mx6.Port,
		Main: map[string]string{"inet_protocols": "all"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	held := send(ctx, t, pf, "sender@origin.example", "user@[IPv6:::1]")
	open := send(ctx, t, pf, "sender@origin.example", "user@[127.0.0.2]")

	r, err := pf.WaitDeferred(ctx, held, "user@[IPv6:::1]", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "TLS is required, but was not offered by host ::1[::1]"; !strings.Contains(r.DelayReason, want) {
		t.Errorf("delay_reason %q, want %q", r.DelayReason, want)
	}
	if m := mx6.Mails(); len(m) != 0 {
		t.Errorf("the MX on ::1 received MAIL: %+v", m)
	}
	if err := pf.WaitGone(ctx, open, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := mx4.ReceivedFor("user@[127.0.0.2]"); len(got) != 1 {
		t.Errorf("the MX on 127.0.0.2 received %+v, want one message", got)
	}
}

package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/probe"
)

// TestPrintProbeGolden: probe's output for each kind of result: a row of
// short cells per MX (per address where its addresses differ), each full error once below the table (an x509 error that
// fails verify and secure too), no table without an MX, NXDOMAIN and a
// null MX worded as the bounce Postfix makes of them.
func TestPrintProbeGolden(t *testing.T) {
	x509 := "certificate not trusted: x509: certificate signed by unknown authority (possibly because of \"crypto/rsa: verification error\" while trying to verify candidate authority certificate \"tlspolicyd test CA\")"
	exp := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	tlsOK := func(verify, secure probe.Check) *probe.TLSInfo {
		return &probe.TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", Verify: verify, Secure: secure,
			Chain: []probe.CertInfo{{Subject: "CN=mx1.partner.example", NotAfter: exp}}}
	}
	bad := probe.Check{Reason: x509}
	ok := probe.Check{OK: true}
	lv := func(may, enc, ver, sec string) map[string]probe.LevelVerdict {
		m := map[string]probe.LevelVerdict{}
		for l, why := range map[string]string{"may": may, "encrypt": enc, "verify": ver, "secure": sec} {
			m[l] = probe.LevelVerdict{OK: why == "", Reason: why}
		}
		return m
	}
	results := []*probe.Result{
		{Target: "partner.example", Status: probe.StatusOK, Duration: 412 * time.Millisecond,
			Reason: "verify would fail: mx1.partner.example[192.0.2.10]: " + x509,
			MX: []probe.MXResult{
				{Host: "mx1.partner.example", Preference: 10, Addrs: []probe.AddrResult{
					{Addr: "192.0.2.10", Port: 25, Reached: true, STARTTLS: true, TLS: tlsOK(bad, bad)},
					{Addr: "2001:db8::10", Port: 25, Reached: true, STARTTLS: true, TLS: tlsOK(bad, bad)},
				}},
				{Host: "mx2.partner.example", Preference: 20, Addrs: []probe.AddrResult{
					{Addr: "192.0.2.20", Port: 25, Reached: true, STARTTLS: true, TLS: tlsOK(ok, probe.Check{Reason: "certificate name does not match partner.example"}),
						Warning: "EHLO reply over 8 KiB"},
				}},
			},
			Levels: lv("", "", "x", "x")},
		{Target: "mixed.example", Status: probe.StatusNoSTARTTLS, Duration: 95 * time.Millisecond,
			MX: []probe.MXResult{
				{Host: "mx1.mixed.example", Preference: 10, Addrs: []probe.AddrResult{
					{Addr: "192.0.2.31", Port: 25, Reached: true, STARTTLS: true, TLS: tlsOK(ok, ok)}}},
				{Host: "mx2.mixed.example", Preference: 20, Addrs: []probe.AddrResult{
					{Addr: "192.0.2.32", Port: 25, Reached: true}}},
				{Host: "mx3.mixed.example", Preference: 30, Addrs: []probe.AddrResult{
					{Addr: "192.0.2.33", Port: 25, Error: "dial tcp 192.0.2.33:25: connect: connection refused", ErrorClass: probe.ClassConnect}}},
				{Host: "mx4.mixed.example", Preference: 40, Error: "lookup mx4.mixed.example: no such host", ErrorClass: probe.ClassNXDomain},
			},
			Levels: lv("", "x", "x", "x")},
		{Target: "split.example", Status: probe.StatusNoSTARTTLS, Duration: 40 * time.Millisecond,
			MX: []probe.MXResult{{Host: "mx.split.example", Preference: 10, Addrs: []probe.AddrResult{
				{Addr: "192.0.2.41", Port: 25, Reached: true, STARTTLS: true, TLS: tlsOK(ok, ok)},
				{Addr: "2001:db8::41", Port: 25, Reached: true}}}},
			Levels: lv("", "x", "x", "x")},
		{Target: "gone.example", Status: probe.StatusUnreachable, ErrorClass: probe.ClassNXDomain, Duration: 3 * time.Millisecond,
			Reason: "gone.example: no such domain (NXDOMAIN)", Levels: lv("x", "x", "x", "x")},
		{Target: "nomail.example", Status: probe.StatusNoMail, Duration: 2 * time.Millisecond,
			Reason: "nomail.example: null MX (RFC 7505): the domain accepts no mail", Levels: lv("x", "x", "x", "x")},
		{Target: "dnsfail.example", Status: probe.StatusTemporary, ErrorClass: probe.ClassDNSTemp, Duration: 30 * time.Second,
			Reason: "MX lookup failed: SERVFAIL", Levels: lv("x", "x", "x", "x")},
		{Target: "local.example", Status: probe.StatusUnreachable, Duration: time.Millisecond,
			MX: []probe.MXResult{{Host: "mx.local.example", Preference: 10, Addrs: []probe.AddrResult{
				{Addr: "10.0.0.5", Port: 25, Error: "refused: non-public address (allow_private is off)", ErrorClass: probe.ClassPrivate}}}},
			Levels: lv("x", "x", "x", "x")},
	}
	var b bytes.Buffer
	for _, r := range results {
		printProbe(&b, r)
	}
	out := b.String()
	golden(t, "probe.txt", out)
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 160 && !strings.HasPrefix(l, "  [") {
			t.Errorf("a row of %d columns (the notes below the table hold long texts): %s", len(l), l)
		}
	}
	if c := strings.Count(out, "x509: certificate signed by unknown authority"); c != 1 {
		t.Errorf("the x509 error is printed %d times, want once", c)
	}
	if strings.Contains(out, "allow_private") {
		t.Errorf("a refusal names the config key, not --allow-private:\n%s", out)
	}
}

package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// mxAddr is one address of an MX host in mxResult: starttls false is a
// server without STARTTLS.
type mxAddr struct {
	host     string
	pref     uint16
	ip       string
	starttls bool
}

// mxResult is a probe result for example.com with the given addresses,
// the MX hosts in the order given (preference order).
func mxResult(addrs ...mxAddr) *probe.Result {
	r := &probe.Result{Target: "example.com", NextHop: "example.com", Port: 25, Status: probe.StatusOK}
	for _, a := range addrs {
		ar := probe.AddrResult{Addr: a.ip, Port: 25, Reached: true, STARTTLS: a.starttls}
		if a.starttls {
			ar.TLS = tlsInfo([]string{"mx1.example.com"}, nil)
		}
		if n := len(r.MX); n > 0 && r.MX[n-1].Host == a.host {
			r.MX[n-1].Addrs = append(r.MX[n-1].Addrs, ar)
			continue
		}
		r.MX = append(r.MX, probe.MXResult{Host: a.host, Preference: a.pref, Addrs: []probe.AddrResult{ar}})
	}
	return r
}

// TestJudgeBackupMX: Judge follows Postfix, which tries the MX addresses
// in preference order and moves on after one that cannot meet the policy,
// for at most two sessions (smtp_mx_session_limit). A backup that cannot
// meet the policy while the primary can is its own, milder finding (mail
// is delivered), not "mail is deferred".
func TestJudgeBackupMX(t *testing.T) {
	primary := mxAddr{"mx1.example.com", 10, "192.0.2.1", true}
	primaryPlain := mxAddr{"mx1.example.com", 10, "192.0.2.1", false}
	backup := mxAddr{"mx2.example.com", 20, "192.0.2.2", true}
	backupPlain := mxAddr{"mx2.example.com", 20, "192.0.2.2", false}
	tests := []struct {
		name    string
		testing bool
		addrs   []mxAddr
		kind    events.Kind // "" = no finding
		ok      bool
		want    string
	}{
		{"backup without STARTTLS", false, []mxAddr{primary, backupPlain}, events.BackupMXFailed, true,
			"a backup MX of example.com cannot meet policy encrypt: mx2.example.com[192.0.2.2]: no STARTTLS offered; mail is delivered through mx1.example.com[192.0.2.1], and deferred while that is down"},
		{"backup without STARTTLS, testing", true, []mxAddr{primary, backupPlain}, events.BackupMXFailed, true,
			"enforcing encrypt for example.com: a backup MX of example.com cannot meet it (mx2.example.com[192.0.2.2]: no STARTTLS offered); mail would still be delivered through mx1.example.com[192.0.2.1]"},
		{"primary without STARTTLS: the backup takes the mail", false, []mxAddr{primaryPlain, backup}, events.BackupMXFailed, true,
			"some MX addresses of example.com cannot meet policy encrypt: mx1.example.com[192.0.2.1]: no STARTTLS offered; mail is delivered through mx2.example.com[192.0.2.2]"},
		{"one of two primary addresses without STARTTLS", false,
			[]mxAddr{primaryPlain, {"mx1.example.com", 10, "192.0.2.3", true}}, events.BackupMXFailed, true,
			"some MX addresses of example.com cannot meet policy encrypt: mx1.example.com[192.0.2.1]: no STARTTLS offered; mail is delivered through mx1.example.com[192.0.2.3]"},
		{"two primary addresses fail: two sessions spent before the backup", false,
			[]mxAddr{primaryPlain, {"mx1.example.com", 10, "192.0.2.3", false}, backup}, events.OutboundProbeFailed, false,
			"mail to example.com is deferred: policy encrypt cannot be met: mx1.example.com[192.0.2.1]: no STARTTLS offered; mx1.example.com[192.0.2.3]: no STARTTLS offered"},
		{"every MX without STARTTLS", false, []mxAddr{primaryPlain, backupPlain}, events.OutboundProbeFailed, false,
			"mail to example.com is deferred: policy encrypt cannot be met: mx1.example.com[192.0.2.1]: no STARTTLS offered; mx2.example.com[192.0.2.2]: no STARTTLS offered"},
		{"every MX with STARTTLS", false, []mxAddr{primary, backup}, "", true, ""},
	}
	p, err := store.ParsePolicy("encrypt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := &store.Entry{Key: "example.com", Policy: p, Testing: tc.testing}
			fs := Judge(e, mxResult(tc.addrs...), time.Now())
			if tc.kind == "" {
				if len(fs) != 0 {
					t.Fatalf("unexpected findings: %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].Kind != tc.kind || fs[0].OK != tc.ok {
				t.Fatalf("findings %+v, want one %s with OK %v", fs, tc.kind, tc.ok)
			}
			if !strings.HasPrefix(fs[0].Reason, tc.want) {
				t.Errorf("reason %q\nwant  %q…", fs[0].Reason, tc.want)
			}
		})
	}
}

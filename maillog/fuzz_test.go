package maillog

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary lines through the syslog parser and the
// correlator: nothing may panic, and whatever parses must be consistent.
func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("testdata/postfix37-maillog-tls.txt")
	if err != nil {
		f.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f.Add(sc.Text())
	}
	f.Add("2026-12-07T17:28:35.123456+00:00 mail postfix/smtp[1]: certificate verification failed for a[b]:1: x")
	f.Add(`{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"postfix/smtp","_PID":"1","MESSAGE":[1,2]}`)
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	c := NewCorrelator()
	f.Fuzz(func(t *testing.T, s string) {
		if l, ok := ParseSyslog(s, now, time.UTC); ok {
			if l.PID <= 0 || l.Program == "" {
				t.Fatalf("parsed without pid/program: %+v", l)
			}
			r := c.Feed(l)
			if d := r.Delivery; d != nil {
				if d.Status == "" || d.QueueID == "" {
					t.Fatalf("delivery without status or queue id: %+v", d)
				}
				if d.TLS != nil && !sameRelay(d.TLS.Peer, d.Relay) {
					t.Fatalf("TLS of another relay: %+v", d)
				}
			}
			if r.Malformed && !LooksTLS(l.Msg) {
				t.Fatalf("malformed but not TLS-looking: %q", l.Msg)
			}
		}
		if l, _, ok, _ := ParseJournal([]byte(s)); ok && l.PID <= 0 {
			t.Fatalf("journal record without pid: %+v", l)
		}
		_ = ParseMessage(s)
	})
}

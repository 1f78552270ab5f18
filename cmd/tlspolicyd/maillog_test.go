package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// TestServeMaillog: serve --maillog follows the file from its end, counts
// what Postfix logs after it started in /api/report, publishes the
// stuck-mail events with the table's policy and file:line, and a restart
// keeps the counts (outbound.json beside the event log) without counting
// a line twice.
func TestServeMaillog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(logPath, []byte("Dec 01 00:00:00 mail postfix/smtp[1]: OLD0000001: to=<x@old.example>, relay=mx.old.example[192.0.2.9]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("outbound:\n  plain.example: encrypt\n  verifyfail.example: verify\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixture, err := os.ReadFile("testdata/postfix37-maillog-tls.txt")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--table", table, "--socketmap", "", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--resolver", "127.0.0.1:1", "--event-log", filepath.Join(dir, "events.jsonl"), "--maillog", logPath}

	report := func(t *testing.T, url string) (web.Report, map[string]web.ReportDomain) {
		var rep web.Report
		code, body := get(t, url+"/api/report?since=3650d")
		if code != 200 || json.Unmarshal(body, &rep) != nil {
			t.Fatalf("/api/report: %d %s", code, body)
		}
		doms := map[string]web.ReportDomain{}
		for _, d := range rep.Domains {
			doms[d.Domain] = d
		}
		return rep, doms
	}
	t.Run("first run", func(t *testing.T) {
		url := "http://" + startServe(t, []string{"http"}, args...)["http"]
		// The follower starts at the end of the file: lines are appended
		// until it has read one, so that the fixture comes after.
		deadline := time.Now().Add(10 * time.Second)
		for strings.Contains(metricsText(t, url), "tlspolicyd_maillog_lines_total 0") {
			if time.Now().After(deadline) {
				t.Fatal("the follower read nothing within 10 s")
			}
			f, _ := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString("Dec 01 00:00:01 mail postfix/anvil[2]: statistics: marker\n")
			f.Close()
			time.Sleep(100 * time.Millisecond)
		}
		f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(fixture)
		f.Close()
		// /api/report answers from a cache for up to 10 s.
		deadline = time.Now().Add(30 * time.Second)
		for {
			rep, doms := report(t, url)
			if o := doms["untrusted.example"].OutboundTLS; o != nil && rep.EventTotals[events.OutboundDeferred] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("outbound report not filled within 30 s: %+v", rep)
			}
			time.Sleep(100 * time.Millisecond)
		}
		rep, doms := report(t, url)
		if rep.Maillog != logPath {
			t.Errorf("maillog %q", rep.Maillog)
		}
		if _, ok := doms["old.example"]; ok {
			t.Error("a line logged before the first start was counted")
		}
		if o := doms["plain.example"].OutboundTLS; o == nil || o.Deferred != 1 || o.Stuck != 1 || o.Deferrals["starttls_not_offered"] != 1 {
			t.Errorf("plain.example: %+v", o)
		}
		if o := doms["secure.example"].OutboundTLS; o == nil || o.Sent != 1 || o.Verified != 1 || o.Versions["TLSv1.3"] != 1 {
			t.Errorf("secure.example: %+v", o)
		}
		out, errOut, code := runCLI(t, "report", "--server", url, "--since", "3650d")
		if code != 0 || !strings.Contains(out, "Outbound TLS from Postfix's log ("+logPath+")") ||
			!regexp.MustCompile(`(?m)^plain\.example +1 +0 +0 +0/0/0/0 +- +1 \(starttls_not_offered 1\) +1 since \d{4}-\d\d-\d\d \d\d:\d\d UTC: TLS is required`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^secure\.example +1 +1 +1 +1/0/0/0 +TLSv1\.3:1 +0 +-$`).MatchString(out) {
			t.Errorf("report: exit %d\n%s\n%s", code, out, errOut)
		}
		ev := doms["plain.example"].Events
		if len(ev) != 1 || ev[0].Kind != events.OutboundDeferred || ev[0].Rule != "encrypt" || ev[0].Source != "table "+table+":2" ||
			!strings.HasPrefix(ev[0].Reason, "1 message to plain.example deferred by TLS policy since ") {
			t.Errorf("plain.example events %+v", ev)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "outbound.json")); err != nil {
		t.Fatalf("outbound state not saved at shutdown: %v", err)
	}
	t.Run("restart", func(t *testing.T) {
		url := "http://" + startServe(t, []string{"http"}, args...)["http"]
		time.Sleep(300 * time.Millisecond)
		rep, doms := report(t, url)
		var msgs uint64
		for _, d := range doms {
			if d.OutboundTLS != nil {
				msgs += d.OutboundTLS.Messages
			}
		}
		if msgs != 7 {
			t.Errorf("after restart: %d messages counted, want 7", msgs)
		}
		if rep.EventTotals[events.OutboundDeferred] != 2 {
			t.Errorf("after restart: event totals %v (the stuck events must not repeat)", rep.EventTotals)
		}
	})
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	_, body := get(t, url+"/metrics")
	return string(body)
}

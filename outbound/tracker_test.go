package outbound

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/maillog"
)

type published struct {
	mu  sync.Mutex
	evs []events.Event
}

func (p *published) add(e events.Event) { p.mu.Lock(); p.evs = append(p.evs, e); p.mu.Unlock() }
func (p *published) all() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]events.Event(nil), p.evs...)
}

func fixedNow() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) }

func policyFunc(domain string) (string, string) {
	return "encrypt", "table /etc/tlspolicyd/table/partners.yaml:3"
}

// feed runs the lines through a correlator into t.
func feed(t *testing.T, tr *Tracker, lines ...string) {
	t.Helper()
	h := tr.Handler(false, time.UTC)
	for i, l := range lines {
		h(l, logfollow.Position{Inode: 1, Offset: int64(i + 1)})
	}
}

func fixtureLines(t *testing.T) []string {
	b, err := os.ReadFile("testdata/postfix37-maillog-tls.txt")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestReportRecorded: the report's rows for what Postfix 3.7 logged.
func TestReportRecorded(t *testing.T) {
	var pub published
	tr := New(Config{Now: fixedNow, Publish: pub.add, Policy: policyFunc})
	feed(t, tr, fixtureLines(t)...)
	rows := map[string]DomainReport{}
	for _, r := range tr.Report(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		rows[r.Domain] = r
	}
	type want struct{ msgs, sent, deferred, tls, verified, trusted, untrusted, tls13, stuck int }
	wants := map[string]want{
		"clear.example":      {1, 1, 0, 0, 0, 0, 0, 0, 0},
		"plain.example":      {1, 0, 1, 0, 0, 0, 0, 0, 1},
		"verifyfail.example": {1, 0, 1, 0, 0, 0, 0, 0, 1},
		"secure.example":     {1, 1, 0, 1, 1, 0, 0, 1, 0},
		"tlsok.example":      {1, 1, 0, 1, 1, 0, 0, 1, 0},
		"maytrusted.example": {1, 1, 0, 1, 0, 1, 0, 1, 0},
		"untrusted.example":  {1, 1, 0, 1, 0, 0, 1, 1, 0},
	}
	if len(rows) != len(wants) {
		t.Fatalf("rows %v", rows)
	}
	for d, w := range wants {
		r := rows[d]
		got := want{int(r.Messages), int(r.Sent), int(r.Deferred), int(r.TLS), int(r.Verified), int(r.Trusted), int(r.Untrusted), int(r.Versions["TLSv1.3"]), r.Stuck}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", d, got, w)
		}
	}
	if got := rows["plain.example"].Deferrals[string(maillog.ReasonNotOffered)]; got != 1 {
		t.Errorf("plain.example deferrals %v", rows["plain.example"].Deferrals)
	}
	if got := rows["verifyfail.example"].Deferrals[string(maillog.ReasonNotVerified)]; got != 1 {
		t.Errorf("verifyfail.example deferrals %v", rows["verifyfail.example"].Deferrals)
	}
	// TLS-RPT's view of the day.
	day := tr.Day("2026-12-07")
	type rpt struct {
		ok, failed uint64
		types      string
	}
	rptWant := map[string]rpt{
		"clear.example":      {0, 1, "starttls-not-supported"},
		"plain.example":      {0, 1, "starttls-not-supported"},
		"verifyfail.example": {0, 1, "certificate-not-trusted"},
		"secure.example":     {1, 0, ""},
		"untrusted.example":  {1, 0, ""},
	}
	for d, w := range rptWant {
		c := day[d]
		var types []string
		for _, f := range c.Failures {
			types = append(types, f.ResultType)
		}
		if got := (rpt{c.SessionsOK, c.SessionsFailed, strings.Join(types, ",")}); got != w {
			t.Errorf("%s TLS-RPT: got %+v, want %+v", d, got, w)
		}
	}
	if f := day["verifyfail.example"].Failures[0]; f.MXHost != "mx.verifyfail.example" || f.MXAddr != "127.0.0.4" || f.Detail != "self-signed certificate" {
		t.Errorf("failure detail %+v", f)
	}
	evs := pub.all()
	if len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	for _, e := range evs {
		if e.Kind != events.OutboundDeferred || e.Rule != "encrypt" || !strings.Contains(e.Reason, "1 message to "+e.Domain+" deferred by TLS policy since 2026-12-07 17:28:35 UTC (") {
			t.Errorf("event %+v", e)
		}
	}
	if tr.Lines() != uint64(len(fixtureLines(t))) || tr.Deliveries() != 7 || tr.Malformed() != 0 {
		t.Errorf("lines %d deliveries %d malformed %d", tr.Lines(), tr.Deliveries(), tr.Malformed())
	}
}

const (
	deferLine = "Dec  7 10:%02d:00 mail postfix/smtp[7]: %s: to=<u@bank.example>, relay=mx.bank.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx.bank.example[192.0.2.1])"
	sentTLS   = "Dec  7 10:%02d:00 mail postfix/smtp[8]: Verified TLS connection established to mx.bank.example[192.0.2.1]:25: TLSv1.2 with cipher X (256/256 bits)"
	sentLine  = "Dec  7 10:%02d:00 mail postfix/smtp[8]: %s: to=<u@bank.example>, relay=mx.bank.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)"
	bounced   = "Dec  7 10:%02d:00 mail postfix/smtp[7]: %s: to=<u@bank.example>, relay=mx.bank.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=5.0.0, status=bounced (host said no)"
)

func line(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestStuckAndDeliveredAgain: the first TLS deferral of a domain raises a
// stuck event; retries of the same message do not; a growing count raises
// another only after Interval; a delivery raises "delivered again" and
// clears the state; a bounce of the only stuck message clears it silently.
func TestStuckAndDeliveredAgain(t *testing.T) {
	var pub published
	tr := New(Config{Now: fixedNow, Publish: pub.add, Policy: policyFunc, Interval: 30 * time.Minute})
	feed(t, tr,
		line(deferLine, 0, "AAAAA1"),
		line(deferLine, 5, "AAAAA1"),  // retry: same message
		line(deferLine, 10, "AAAAA2"), // a second message, within the interval
		line(deferLine, 40, "AAAAA3"), // a third, after it
	)
	evs := pub.all()
	if len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	if !strings.HasPrefix(evs[0].Reason, "1 message to bank.example deferred by TLS policy since 2026-12-07 10:00:00 UTC (TLS is required, but was not offered by host mx.bank.example[192.0.2.1]; policy encrypt, table /etc/tlspolicyd/table/partners.yaml:3)") {
		t.Errorf("first event %q", evs[0].Reason)
	}
	if !strings.HasPrefix(evs[1].Reason, "3 messages to bank.example deferred by TLS policy since 2026-12-07 10:00:00 UTC") {
		t.Errorf("second event %q", evs[1].Reason)
	}
	if r := tr.Report(time.Time{}); len(r) != 1 || r[0].Stuck != 3 || r[0].Deferred != 4 {
		t.Errorf("report %+v", r)
	}
	feed(t, tr, line(sentTLS, 45), line(sentLine, 45, "AAAAA1"))
	evs = pub.all()
	if len(evs) != 3 || evs[2].Kind != events.OutboundDelivered ||
		evs[2].Reason != "mail to bank.example delivered again over TLSv1.2 (Verified) to mx.bank.example[192.0.2.1]:25; it was deferred by TLS policy since 2026-12-07 10:00:00 UTC (TLS is required, but was not offered by host mx.bank.example[192.0.2.1])" {
		t.Fatalf("events %+v", evs)
	}
	if r := tr.Report(time.Time{}); r[0].Stuck != 0 || r[0].StuckSince != nil {
		t.Errorf("still stuck: %+v", r[0])
	}
	// Stuck again, then the message bounces: no delivered-again notice.
	feed(t, tr, line(deferLine, 50, "AAAAA4"), line(bounced, 55, "AAAAA4"))
	evs = pub.all()
	if len(evs) != 4 || evs[3].Kind != events.OutboundDeferred {
		t.Fatalf("events %+v", evs)
	}
	if r := tr.Report(time.Time{}); r[0].Stuck != 0 || r[0].Bounced != 1 {
		t.Errorf("report %+v", r[0])
	}
}

// TestRestartNeitherLosesNorDoubleCounts follows a real file, saves, stops;
// lines written while stopped are counted once after the restart, and the
// stuck state survives (no second stuck event for the same domain).
func TestRestartNeitherLosesNorDoubleCounts(t *testing.T) {
	dir := t.TempDir()
	logPath, statePath := filepath.Join(dir, "mail.log"), filepath.Join(dir, "outbound.json")
	lines := fixtureLines(t)
	appendText(t, logPath, "Dec 07 17:28:00 mail postfix/master[1]: daemon started\n")

	first := true
	run := func(pub *published, upto int, write func()) *Tracker {
		defer func() { first = false }()
		tr := New(Config{Now: fixedNow, Publish: pub.add, Policy: policyFunc})
		if err := tr.Load(statePath); err != nil {
			t.Fatal(err)
		}
		f := &logfollow.File{Path: logPath, Start: tr.Resume(logPath), Poll: 10 * time.Millisecond}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- tr.Follow(ctx, f, false, statePath, time.Hour) }()
		base := uint64(0)
		if first {
			base = waitFollowing(t, logPath, tr.Lines)
		}
		write()
		deadline := time.Now().Add(10 * time.Second)
		for tr.Lines() < base+uint64(upto) {
			if time.Now().After(deadline) {
				t.Fatalf("read %d lines, want %d", tr.Lines(), upto)
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return tr
	}
	var pub1, pub2 published
	half := len(lines) / 2
	run(&pub1, half, func() { appendText(t, logPath, strings.Join(lines[:half], "\n")+"\n") })
	// Stopped: the rest is logged; the restart reads exactly that.
	appendText(t, logPath, strings.Join(lines[half:], "\n")+"\n")
	tr := run(&pub2, len(lines)-half, func() {})
	var msgs uint64
	for _, r := range tr.Report(time.Time{}) {
		msgs += r.Messages
	}
	if msgs != 7 || tr.Lines() != uint64(len(lines)-half) {
		t.Errorf("messages %d (want 7), lines after restart %d (want %d)", msgs, tr.Lines(), len(lines)-half)
	}
	if n := len(pub1.all()) + len(pub2.all()); n != 2 {
		t.Errorf("%d stuck events in all, want 2", n)
	}
	// A third start with nothing new reads nothing and counts nothing more.
	var pub3 published
	tr = New(Config{Publish: pub3.add})
	if err := tr.Load(statePath); err != nil {
		t.Fatal(err)
	}
	msgs = 0
	for _, r := range tr.Report(time.Time{}) {
		msgs += r.Messages
	}
	if msgs != 7 {
		t.Errorf("reloaded state has %d messages", msgs)
	}
	if p := tr.Resume("journal"); p != nil {
		t.Errorf("a file's position resumes the journal: %+v", p)
	}
}

// waitFollowing appends a harmless line to path until lines (a follower's
// count) moves, i.e. the follower, started at the end of the file, reads
// it; it returns the count then.
func waitFollowing(t *testing.T, path string, lines func() uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for lines() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the follower read nothing within 10 s")
		}
		appendText(t, path, "Dec 07 17:28:01 mail postfix/anvil[2]: statistics: marker\n")
		time.Sleep(50 * time.Millisecond)
	}
	// Markers written just before the first was read may still come.
	time.Sleep(100 * time.Millisecond)
	return lines()
}

func appendText(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestLoadCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbound.json")
	os.WriteFile(path, []byte("{"), 0o600)
	tr := New(Config{})
	if err := tr.Load(path); err == nil {
		t.Fatal("corrupt state accepted")
	}
	if tr.Resume("/var/log/mail.log") != nil {
		t.Fatal("position from a corrupt file")
	}
}

// TestResultTypesRecorded: Postfix 3.7's verification failures (recorded
// in the end-to-end test: a certificate from a CA it does not trust, one
// naming another host) map to RFC 8460's certificate-not-trusted and
// certificate-host-mismatch, with the MX and OpenSSL's reason.
func TestResultTypesRecorded(t *testing.T) {
	tr := New(Config{Now: fixedNow})
	feed(t, tr, strings.Split(strings.TrimSpace(string(mustRead(t, "testdata/postfix37-maillog-verify.txt"))), "\n")...)
	day := tr.Day("2026-12-07")
	for dom, want := range map[string]Failure{
		"verifyfail.example": {ResultType: "certificate-not-trusted", MXHost: "verifyfail.example", MXAddr: "127.0.0.4", Detail: "untrusted issuer /CN=tlspolicyd untrusted CA", Count: 1},
		"mismatch.example":   {ResultType: "certificate-host-mismatch", MXHost: "mismatch.example", MXAddr: "127.0.0.5", Detail: "num=62:hostname mismatch", Count: 1},
	} {
		c := day[dom]
		if len(c.Failures) != 1 || c.Failures[0] != want || c.SessionsFailed != 1 || c.SessionsOK != 0 {
			t.Errorf("%s: %+v", dom, c)
		}
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFailClosedAndBounceRecorded: what Postfix 3.7 logged (end-to-end
// test) for a failed tls_policy lookup (smtp), a failed tls_transport
// lookup (error(8), relay=none) and a bounce: the first two are TLS policy
// deferrals and make the domain stuck, the bounce and the bounce notice's
// own deferral (origin.example: no DNS in the test) are not.
func TestFailClosedAndBounceRecorded(t *testing.T) {
	var pub published
	tr := New(Config{Now: fixedNow, Publish: pub.add})
	feed(t, tr, strings.Split(strings.TrimSpace(string(mustRead(t, "testdata/postfix37-maillog-failclosed.txt"))), "\n")...)
	rows := map[string]DomainReport{}
	for _, r := range tr.Report(time.Time{}) {
		rows[r.Domain] = r
	}
	for dom, want := range map[string]struct {
		reason  maillog.Reason
		bounced uint64
		stuck   int
	}{
		"temp.example":     {maillog.ReasonPolicyLookup, 0, 1},
		"resolver.example": {maillog.ReasonResolverFailure, 0, 1},
		"bounce.example":   {maillog.ReasonOther, 1, 0},
		"origin.example":   {maillog.ReasonOther, 0, 0},
	} {
		r := rows[dom]
		if r.Messages != 1 || r.Deferrals[string(want.reason)] != 1 || r.Bounced != want.bounced || r.Stuck != want.stuck {
			t.Errorf("%s: %+v, want %+v", dom, r, want)
		}
	}
	if evs := pub.all(); len(evs) != 2 {
		t.Errorf("events %+v, want the two stuck domains", evs)
	}
}

// TestRestartBetweenTLSAndStatusLine: a restart after a session's TLS line
// and before its status line still ties them (the open sessions are saved
// with the position).
func TestRestartBetweenTLSAndStatusLine(t *testing.T) {
	lines := fixtureLines(t)
	cut := -1
	for i, l := range lines {
		if strings.Contains(l, "Verified TLS connection established to mx.secure.example") {
			cut = i + 1
		}
	}
	if cut < 0 {
		t.Fatal("fixture changed")
	}
	path := filepath.Join(t.TempDir(), "outbound.json")
	tr := New(Config{Now: fixedNow})
	feed(t, tr, lines[:cut]...)
	if err := tr.Save(path); err != nil {
		t.Fatal(err)
	}
	tr = New(Config{Now: fixedNow})
	if err := tr.Load(path); err != nil {
		t.Fatal(err)
	}
	feed(t, tr, lines[cut:]...)
	for _, r := range tr.Report(time.Time{}) {
		if r.Domain == "secure.example" {
			if r.Sent != 1 || r.Verified != 1 || r.Versions["TLSv1.3"] != 1 {
				t.Fatalf("secure.example after a restart between its TLS and status lines: %+v", r)
			}
			return
		}
	}
	t.Fatal("secure.example not counted")
}

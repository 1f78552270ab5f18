package tests

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/tests/internal/harness"
	"github.com/tlspolicyd/tlspolicyd/tlsrpt"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// TestMaillogRealPostfix: the daemon follows the maillog of a real Postfix
// 3.7 (smtp_tls_loglevel = 1) delivering through examples/postfix to fake
// MX hosts: in clear, over TLS with a verified certificate, deferred
// because the MX offers no STARTTLS, because its certificate comes from a
// CA Postfix does not trust, and because it names another host. It checks
// the outbound report, the stuck-mail events and alert mail (policy and its
// table file:line), the delivered-again notice once the table lets the
// untrusted MX through, that rotation (postfix logrotate, then
// copytruncate) loses and duplicates nothing, and the TLS-RPT report of a
// domain whose DNS publishes _smtp._tls, received by an SMTP and an HTTPS
// sink and checked field by field.
func TestMaillogRealPostfix(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	ca := harness.NewTestCA(t, "tlspolicyd trusted CA")
	other := harness.NewTestCA(t, "tlspolicyd untrusted CA")

	// Sinks: the alert relay (also TLS-RPT mail) and an HTTPS rua.
	relay := harness.NewFakeMX(t, "127.0.0.1")
	var mu sync.Mutex
	var posted [][]byte
	https := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.Header.Get("Content-Type") == "application/tlsrpt+gzip" {
			posted = append(posted, b)
		}
		mu.Unlock()
	}))
	defer https.Close()
	dir := t.TempDir()
	httpsCA := filepath.Join(dir, "https-ca.pem")
	writeFile(t, httpsCA, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: https.Certificate().Raw})))
	zone := probetest.NewZone(t)
	zone.Add(t, `_smtp._tls.verifyfail.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example,`+https.URL+`/tlsrpt"`)

	port := harness.FreePort(t, "127.0.0.1")
	plain := harness.NewFakeMX(t, "127.0.0.2", harness.OnPort(port))
	good := harness.NewTLSFakeMX(t, ca.Issue(t, "tlsok.example"), "127.0.0.3", harness.OnPort(port))
	untrusted := harness.NewTLSFakeMX(t, other.Issue(t, "verifyfail.example"), "127.0.0.4", harness.OnPort(port))
	wrongname := harness.NewTLSFakeMX(t, ca.Issue(t, "elsewhere.example"), "127.0.0.5", harness.OnPort(port))
	hosts := map[string]string{"plain.example": plain.Host, "clear.example": plain.Host, "tlsok.example": good.Host,
		"verifyfail.example": untrusted.Host, "mismatch.example": wrongname.Host}

	table := `outbound:
  plain.example: encrypt
  tlsok.example: verify
  verifyfail.example: verify
  mismatch.example: verify
`
	stateDir := filepath.Join(dir, "state")
	if err := os.Mkdir(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tablePath := filepath.Join(dir, "table.yaml")
	writeFile(t, tablePath, table)
	// The instance needs the daemon's address and the daemon the
	// instance's maillog: the daemon follows a link that does not exist
	// yet (a log created after the start is read from its beginning).
	link := filepath.Join(dir, "mail.log")
	httpAddr := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	d := harness.StartDaemon(t, daemonBinary(t), tablePath,
		"--event-log", filepath.Join(stateDir, "events.jsonl"), "--http", httpAddr, "--dane=false", "--mta-sts=false",
		"--alert-mail-to", "postmaster@ourcorp.example", "--alert-smtp", relay.Addr(), "--alert-from", "tlspolicyd@ourcorp.example",
		"--maillog", link)
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: d.Addr, MXPort: port, Hosts: hosts, CAFile: ca.File})
	if err := os.Symlink(pf.Maillog, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	qids := map[string]string{}
	for _, dom := range []string{"plain", "clear", "tlsok", "verifyfail", "mismatch"} {
		qids[dom] = send(ctx, t, pf, "sender@origin.example", "user@"+dom+".example")
	}
	for _, dom := range []string{"clear", "tlsok"} {
		if err := pf.WaitGone(ctx, qids[dom], 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, dom := range []string{"plain", "verifyfail", "mismatch"} {
		if _, err := pf.WaitDeferred(ctx, qids[dom], "user@"+dom+".example", 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for line := range strings.Lines(pf.Log()) {
		if strings.Contains(line, "mismatch.example") || strings.Contains(line, "verifyfail.example") {
			t.Logf("recorded: %s", strings.TrimSpace(line))
		}
	}

	// The outbound report.
	type row struct {
		msgs, sent, deferred, tls, verified, untrusted uint64
		reason                                         string
		stuck                                          int
	}
	want := map[string]row{
		"clear.example":      {1, 1, 0, 0, 0, 0, "", 0},
		"tlsok.example":      {1, 1, 0, 1, 1, 0, "", 0},
		"plain.example":      {1, 0, 1, 0, 0, 0, "starttls_not_offered", 1},
		"verifyfail.example": {1, 0, 1, 0, 0, 0, "certificate_not_verified", 1},
		"mismatch.example":   {1, 0, 1, 0, 0, 0, "certificate_not_verified", 1},
	}
	rep := waitReport(ctx, t, httpAddr, func(rep web.Report, doms map[string]web.ReportDomain) bool {
		return rep.EventTotals[events.OutboundDeferred] >= 3 && doms["tlsok.example"].OutboundTLS != nil && doms["clear.example"].OutboundTLS != nil
	})
	doms := byDomain(rep)
	for dom, w := range want {
		o := doms[dom].OutboundTLS
		if o == nil {
			t.Errorf("%s: no outbound_tls row", dom)
			continue
		}
		reason := ""
		for r := range o.Deferrals {
			reason = r
		}
		got := row{o.Messages, o.Sent, o.Deferred, o.TLS, o.Verified, o.Untrusted, reason, o.Stuck}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", dom, got, w)
		}
		if dom == "tlsok.example" && o.Versions["TLSv1.3"] != 1 {
			t.Errorf("tlsok.example versions %v", o.Versions)
		}
	}
	for _, dom := range []string{"plain.example", "verifyfail.example"} {
		evs := doms[dom].Events
		pol := map[string]string{"plain.example": "encrypt", "verifyfail.example": "verify"}[dom]
		line := map[string]string{"plain.example": "2", "verifyfail.example": "4"}[dom]
		if len(evs) != 1 || evs[0].Kind != events.OutboundDeferred || evs[0].Rule != pol || evs[0].Source != "table "+tablePath+":"+line ||
			!strings.HasPrefix(evs[0].Reason, "1 message to "+dom+" deferred by TLS policy since ") {
			t.Errorf("%s events: %+v", dom, evs)
		}
	}

	// Delivered again: the table lets the untrusted MX through.
	writeFile(t, tablePath, strings.Replace(table, "verifyfail.example: verify", "verifyfail.example: may", 1))
	if !harness.WaitFor(ctx, 20*time.Second, func() bool {
		return answer(t, query(t, pf.ConfigDir, d, "tls_policy", "verifyfail.example")) == "may"
	}) {
		t.Fatal("table change not loaded within 20 s")
	}
	if err := pf.Retry(ctx, qids["verifyfail"]); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitGone(ctx, qids["verifyfail"], 30*time.Second); err != nil {
		t.Fatal(err)
	}
	rep = waitReport(ctx, t, httpAddr, func(rep web.Report, _ map[string]web.ReportDomain) bool {
		return rep.EventTotals[events.OutboundDelivered] == 1
	})
	if o := byDomain(rep)["verifyfail.example"].OutboundTLS; o == nil || o.Sent != 1 || o.Untrusted != 1 || o.Stuck != 0 {
		t.Errorf("verifyfail.example after delivery: %+v", o)
	}

	// Rotation: postfix logrotate (rename, new file), then copytruncate;
	// one more message after each is counted once, nothing else again.
	if _, err := pf.Command(ctx, "", "postfix", "logrotate"); err != nil {
		t.Fatal(err)
	}
	clearAgain := func(n uint64) {
		t.Helper()
		qid := send(ctx, t, pf, "sender@origin.example", "user@clear.example")
		if err := pf.WaitGone(ctx, qid, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		rep := waitReport(ctx, t, httpAddr, func(_ web.Report, doms map[string]web.ReportDomain) bool {
			o := doms["clear.example"].OutboundTLS
			return o != nil && o.Sent >= n
		})
		doms := byDomain(rep)
		if o := doms["clear.example"].OutboundTLS; o.Sent != n || o.Messages != n {
			t.Errorf("clear.example after rotation: %+v, want %d sent", o, n)
		}
		if o := doms["tlsok.example"].OutboundTLS; o.Messages != 1 {
			t.Errorf("tlsok.example counted again after rotation: %+v", o)
		}
		if o := doms["plain.example"].OutboundTLS; o.Messages != 1 {
			t.Errorf("plain.example counted again after rotation: %+v", o)
		}
	}
	clearAgain(2)
	b, err := os.ReadFile(pf.Maillog)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, link+".1", string(b))
	if err := os.Truncate(pf.Maillog, 0); err != nil {
		t.Fatal(err)
	}
	clearAgain(3)

	// The alert mail: the stuck domains and the delivered-again notice.
	var alerts string
	if !harness.WaitFor(ctx, 150*time.Second, func() bool {
		alerts = alertText(t, relay, "postmaster@ourcorp.example")
		return strings.Contains(alerts, "Mail to plain.example is stuck: deferred by TLS policy") &&
			strings.Contains(alerts, "Mail to verifyfail.example is delivered again")
	}) {
		t.Fatalf("alert mail incomplete after 150 s:\n%s", alerts)
	}
	if !strings.Contains(strings.Join(strings.Fields(alerts), " "), "Policy: outbound policy encrypt, table "+tablePath+":2") {
		t.Errorf("stuck alert does not name the policy and its file:line:\n%s", alerts)
	}

	// TLS-RPT for verifyfail.example, which publishes _smtp._tls.
	cfg := filepath.Join(dir, "tlsrpt.yaml")
	writeFile(t, cfg, `table: `+tablePath+`
probe: {resolver: "`+zone.Addr+`", cache: ""}
log: {events: `+filepath.Join(stateDir, "events.jsonl")+`}
alerts: {smtp: "`+relay.Addr()+`", from: tlspolicyd@ourcorp.example}
sources: {dane: false, mta_sts: false, https_ca: `+httpsCA+`}
maillog: `+link+`
tlsrpt: {enabled: true, organization: Ourcorp, contact: postmaster@ourcorp.example}
`)
	var out string
	if !harness.WaitFor(ctx, 30*time.Second, func() bool { // the state is saved every 10 s
		out = tlspolicyd(t, "tlsrpt", "--config", cfg, "--dry-run", "--day", "today")
		return strings.Contains(out, `"total-successful-session-count": 1`)
	}) {
		t.Fatalf("tlsrpt --dry-run:\n%s", out)
	}
	if out = tlspolicyd(t, "tlsrpt", "--config", cfg, "--day", "today"); !strings.Contains(out, "1 reports, 2 deliveries sent, 0 failed") {
		t.Fatalf("tlsrpt: %s", out)
	}
	checkReport := func(where string, gz []byte) {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		js, _ := io.ReadAll(zr)
		var r tlsrpt.Report
		if err := json.Unmarshal(js, &r); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		p := r.Policies[0]
		today := time.Now().UTC().Format(time.DateOnly)
		if r.OrganizationName != "Ourcorp" || r.ContactInfo != "postmaster@ourcorp.example" || r.DateRange.Start.Format(time.DateOnly) != today ||
			p.Policy.Type != "no-policy-found" || p.Policy.Domain != "verifyfail.example" ||
			p.Summary.Successful != 1 || p.Summary.Failed != 1 || len(p.FailureDetails) != 1 {
			t.Fatalf("%s: report %s", where, js)
		}
		f := p.FailureDetails[0]
		if f.ResultType != "certificate-not-trusted" || f.ReceivingMXHostname != "verifyfail.example" || f.ReceivingIP != "127.0.0.4" ||
			f.FailedSessionCount != 1 || f.FailureReasonCode != "untrusted issuer /CN=tlspolicyd untrusted CA" {
			t.Errorf("%s: failure details %+v", where, f)
		}
	}
	mu.Lock()
	if len(posted) != 1 {
		t.Fatalf("HTTPS sink got %d reports", len(posted))
	}
	checkReport("https", posted[0])
	mu.Unlock()
	msgs := relay.ReceivedFor("tlsrpt@reports.example")
	if len(msgs) != 1 {
		t.Fatalf("SMTP sink got %d reports", len(msgs))
	}
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: verifyfail.example Submitter: ") || m.Header.Get("TLS-Report-Domain") != "verifyfail.example" {
		t.Errorf("report mail headers %v", m.Header)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || params["report-type"] != "tlsrpt" {
		t.Fatalf("report mail Content-Type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	if _, err := mr.NextPart(); err != nil {
		t.Fatal(err)
	}
	att, err := mr.NextPart()
	if err != nil || att.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
		t.Fatalf("report attachment %v %v", att, err)
	}
	b64, _ := io.ReadAll(att)
	gz, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b64), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	checkReport("mail", gz)

	// Every TLS line of the real log parsed.
	if _, body := httpGet(t, "http://"+httpAddr+"/metrics"); !strings.Contains(body, "tlspolicyd_maillog_unparsed_tls_lines_total 0") {
		t.Errorf("unparsed TLS lines:\n%s", grepLines(body, "tlspolicyd_maillog"))
	}
}

// waitReport polls /api/report until cond holds (or fails t after 60 s).
func waitReport(ctx context.Context, t *testing.T, addr string, cond func(web.Report, map[string]web.ReportDomain) bool) web.Report {
	t.Helper()
	var rep web.Report
	if !harness.WaitFor(ctx, 60*time.Second, func() bool {
		code, body := httpGet(t, "http://"+addr+"/api/report?since=2d")
		rep = web.Report{}
		if code != 200 || json.Unmarshal([]byte(body), &rep) != nil {
			return false
		}
		return cond(rep, byDomain(rep))
	}) {
		b, _ := json.MarshalIndent(rep, "", "  ")
		t.Fatalf("report not as expected within 60 s:\n%s", b)
	}
	return rep
}

func byDomain(rep web.Report) map[string]web.ReportDomain {
	m := map[string]web.ReportDomain{}
	for _, d := range rep.Domains {
		m[d.Domain] = d
	}
	return m
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// alertText returns the decoded bodies (with subjects) of the alert mails
// the relay received for rcpt.
func alertText(t *testing.T, relay *harness.FakeMX, rcpt string) string {
	t.Helper()
	var b strings.Builder
	for _, msg := range relay.ReceivedFor(rcpt) {
		m, err := mail.ReadMessage(bytes.NewReader(msg.Data))
		if err != nil {
			continue
		}
		b.WriteString(m.Header.Get("Subject") + "\n")
		var body io.Reader = m.Body
		if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(m.Body)
		}
		text, _ := io.ReadAll(body)
		b.Write(text)
		b.WriteString("\n")
	}
	return b.String()
}

// tlspolicyd runs the daemon binary with args and returns its output.
func tlspolicyd(t *testing.T, args ...string) string {
	t.Helper()
	out, _ := exec.Command(daemonBinary(t), args...).CombinedOutput()
	return string(out)
}

// TestMaillogFailClosedAndBounce records what Postfix logs when the policy
// lookup fails (TEMP for tls_policy: "client TLS configuration problem"),
// when the tls_transport lookup fails ("address resolver failure") and
// when a message bounces (the MX refuses the recipient), and checks that the daemon
// following that log counts each under its reason, raises the stuck-mail
// event for the two TLS policy deferrals and none for the bounce.
func TestMaillogFailClosedAndBounce(t *testing.T) {
	t.Parallel()
	harness.RequirePostfix(t)
	stub := harness.NewStubSocketmap(t, map[string]string{
		"tls_policy temp.example":             "TEMP policy store unavailable",
		"tls_transport user@resolver.example": "TEMP policy store unavailable",
	})
	mx := harness.NewFakeMX(t, "127.0.0.2")
	rejecting := startRejectingMX(t, "127.0.0.6:"+itoa(mx.Port))
	dir := t.TempDir()
	link := filepath.Join(dir, "mail.log")
	httpAddr := "127.0.0.1:" + itoa(harness.FreePort(t, "127.0.0.1"))
	tablePath := filepath.Join(dir, "table.yaml")
	writeFile(t, tablePath, "outbound: {}\n")
	harness.StartDaemon(t, daemonBinary(t), tablePath, "--http", httpAddr, "--dane=false", "--mta-sts=false", "--maillog", link)
	pf := harness.NewPostfix(t, harness.PostfixConfig{Socketmap: stub.Addr, MXPort: mx.Port,
		Hosts: map[string]string{"temp.example": mx.Host, "resolver.example": mx.Host, "bounce.example": rejecting}})
	if err := os.Symlink(pf.Maillog, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	qids := map[string]string{}
	for _, dom := range []string{"temp", "resolver", "bounce"} {
		qids[dom] = send(ctx, t, pf, "sender@origin.example", "user@"+dom+".example")
	}
	for _, dom := range []string{"temp", "resolver"} {
		if _, err := pf.WaitDeferred(ctx, qids[dom], "user@"+dom+".example", 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := pf.WaitGone(ctx, qids["bounce"], 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(pf.Log()) {
		if strings.Contains(line, " to=<") {
			t.Logf("recorded: %s", strings.TrimSpace(line))
		}
	}
	rep := waitReport(ctx, t, httpAddr, func(rep web.Report, doms map[string]web.ReportDomain) bool {
		return doms["temp.example"].OutboundTLS != nil && doms["resolver.example"].OutboundTLS != nil && doms["bounce.example"].OutboundTLS != nil &&
			rep.EventTotals[events.OutboundDeferred] >= 2
	})
	doms := byDomain(rep)
	for dom, reason := range map[string]string{"temp.example": "tls_policy_lookup_failed", "resolver.example": "address_resolver_failure"} {
		o := doms[dom].OutboundTLS
		if o.Deferred != 1 || o.Deferrals[reason] != 1 || o.Stuck != 1 {
			t.Errorf("%s: %+v, want 1 deferral %s, stuck", dom, o, reason)
		}
		if evs := doms[dom].Events; len(evs) != 1 || evs[0].Kind != events.OutboundDeferred {
			t.Errorf("%s events %+v", dom, evs)
		}
	}
	if o := doms["bounce.example"].OutboundTLS; o.Bounced != 1 || o.Stuck != 0 || o.Deferrals["other"] != 1 || len(doms["bounce.example"].Events) != 0 {
		t.Errorf("bounce.example: %+v, events %+v", o, doms["bounce.example"].Events)
	}
	if rep.EventTotals[events.OutboundDeferred] != 2 {
		t.Errorf("event totals %v", rep.EventTotals)
	}
}

// rejectingSession refuses every recipient permanently.
type rejectingSession struct{}

func (rejectingSession) Reset()                               {}
func (rejectingSession) Logout() error                        { return nil }
func (rejectingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (rejectingSession) Rcpt(string, *smtp.RcptOptions) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
}
func (rejectingSession) Data(io.Reader) error { return nil }

// startRejectingMX serves an MX that refuses every recipient (so Postfix
// bounces the message) on addr and returns its host.
func startRejectingMX(t *testing.T, addr string) string {
	t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return rejectingSession{}, nil }))
	srv.Domain = "bounce.example"
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	host, _, _ := strings.Cut(addr, ":")
	return host
}

package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/internal/maillogtest"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/outbound"
)

func TestParseRecord(t *testing.T) {
	good := map[string][]string{
		"v=TLSRPTv1; rua=mailto:reports@example.com":                                       {"mailto:reports@example.com"},
		"v=TLSRPTv1;rua=mailto:a@example.com,https://r.example.com/v1/tlsrpt;":             {"mailto:a@example.com", "https://r.example.com/v1/tlsrpt"},
		"v=TLSRPTv1; rua=mailto:a@example.com , https://r.example.com/x; ext=1":            {"mailto:a@example.com", "https://r.example.com/x"},
		"v=TLSRPTv1; rua=mailto:a@example.com,ftp://x.example.com/,http://plain.example/x": {"mailto:a@example.com"},
	}
	for rec, want := range good {
		got, err := ParseRecord(rec)
		if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%q: %q, %v; want %q", rec, got, err, want)
		}
	}
	for _, bad := range []string{"", "v=TLSRPTv2; rua=mailto:a@b.example", "v=TLSRPTv1", "v=TLSRPTv1; rua=ftp://x.example/",
		"v=TLSRPTv1; rua=mailto:nobody", "v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example", "v=TLSRPTv1; junk"} {
		if got, err := ParseRecord(bad); err == nil {
			t.Errorf("%q accepted: %q", bad, got)
		}
	}
	// Two TLSRPTv1 records: the domain implements no TLS-RPT (§3).
	if _, err := SelectRecord([]string{"v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@d.example"}); err == nil {
		t.Error("two records accepted")
	}
	if got, err := SelectRecord([]string{"v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@b.example"}); err != nil || got[0] != "mailto:a@b.example" {
		t.Errorf("select: %q %v", got, err)
	}
}

// dayCounts feeds the recorded Postfix log into a tracker and returns its
// counts of 2026-12-07 by domain.
func dayCounts(t *testing.T) map[string]outbound.Counts {
	return maillogtest.Recorded(t, "testdata/postfix37-maillog-tls.txt").Day("2026-12-07")
}

func schema(t *testing.T) *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := c.Compile("testdata/rfc8460-report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, js []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(doc)
}

var meta = Meta{Organization: "Ourcorp", Contact: "postmaster@ourcorp.example", Submitter: "mail.ourcorp.example"}

// TestReportsValidateAgainstSchema: the report of every domain of the
// recorded log validates against RFC 8460's report schema; documents
// breaking it do not.
func TestReportsValidateAgainstSchema(t *testing.T) {
	s := schema(t)
	counts := dayCounts(t)
	if len(counts) != 7 {
		t.Fatalf("counts %v", counts)
	}
	for d, c := range counts {
		for _, p := range []PolicyInfo{{}, {Type: TypeSTS, String: []string{"version: STSv1", "mode: enforce", "mx: mx." + d, "max_age: 86400"}, MXHost: []string{"mx." + d}}} {
			rep, err := Build(meta, d, "2026-12-07", c, p)
			if err != nil {
				t.Fatal(err)
			}
			js, _, err := Encode(rep)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(t, s, js); err != nil {
				t.Errorf("%s: %v\n%s", d, err, js)
			}
		}
	}
	for _, bad := range []string{
		`{"organization-name":"o","date-range":{"start-datetime":"2026-12-07T00:00:00Z","end-datetime":"2026-12-07T23:59:59Z"},"contact-info":"c","report-id":"r"}`,
		`{"organization-name":"o","date-range":{"start-datetime":"yesterday","end-datetime":"2026-12-07T23:59:59Z"},"contact-info":"c","report-id":"r","policies":[{"policy":{"policy-type":"sts","policy-domain":"d"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}`,
		`{"organization-name":"o","date-range":{"start-datetime":"2026-12-07T00:00:00Z","end-datetime":"2026-12-07T23:59:59Z"},"contact-info":"c","report-id":"r","policies":[{"policy":{"policy-type":"sts","policy-domain":"d"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0},"failure-details":[{"result-type":"tls-broken","failed-session-count":1}]}]}`,
	} {
		if err := validate(t, s, []byte(bad)); err == nil {
			t.Errorf("schema accepts %s", bad)
		}
	}
}

// sink is an SMTP server that keeps the messages it receives.
type sink struct {
	mu   sync.Mutex
	msgs []sinkMsg
}

type sinkMsg struct {
	from string
	to   []string
	data []byte
}

type sinkSession struct {
	s   *sink
	msg sinkMsg
}

func (ss *sinkSession) Reset()        { ss.msg = sinkMsg{} }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.msg.from = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.msg.to = append(ss.msg.to, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	ss.msg.data = b
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.msg)
	ss.s.mu.Unlock()
	return err
}

func startSink(t *testing.T) (*sink, string) {
	s := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "sink.example"
	srv.AllowInsecureAuth = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return s, l.Addr().String()
}

// TestPlanAndSend: a domain that publishes _smtp._tls gets its report by
// mail through the relay (RFC 8460 §5.3: subject, headers, multipart/report,
// application/tlsrpt+gzip) and by HTTPS POST; domains without a record get
// none; both copies decode to the same report, checked field by field.
func TestPlanAndSend(t *testing.T) {
	var mu sync.Mutex
	var posted []byte
	var postedType string
	https := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posted, postedType = b, r.Header.Get("Content-Type")
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer https.Close()
	box, relay := startSink(t)
	zone := probetest.NewZone(t)
	zone.Add(t, `_smtp._tls.verifyfail.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example," "`+https.URL+`/v1/tlsrpt"`)
	zone.Add(t, `_smtp._tls.plain.example. 300 IN TXT "v=spf1 -all"`)

	r := &Reporter{Meta: meta, DNS: &dnsq.Client{Server: zone.Addr, Timeout: 2 * time.Second},
		Sender: &Sender{SMTP: relay, From: "tlspolicyd@mail.ourcorp.example", Submitter: meta.Submitter, HTTP: https.Client()}}
	ctx := context.Background()
	plans, failed := r.Plan(ctx, "2026-12-07", dayCounts(t))
	if len(failed) != 0 || len(plans) != 1 || plans[0].Domain != "verifyfail.example" || len(plans[0].RUAs) != 2 {
		t.Fatalf("plans %+v failed %v", plans, failed)
	}
	sent, failedSends := r.Send(ctx, plans)
	if sent != 2 || len(failedSends) != 0 {
		t.Fatalf("sent %d, failed %v", sent, failedSends)
	}

	check := func(where string, gz []byte) {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%s: not gzip: %v", where, err)
		}
		js, _ := io.ReadAll(zr)
		if err := validate(t, schema(t), js); err != nil {
			t.Errorf("%s: %v", where, err)
		}
		var rep Report
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Fatal(err)
		}
		p := rep.Policies[0]
		f := p.FailureDetails
		if rep.OrganizationName != "Ourcorp" || rep.ContactInfo != "postmaster@ourcorp.example" ||
			rep.ReportID != "2026-12-07T00:00:00Z_verifyfail.example@mail.ourcorp.example" ||
			!rep.DateRange.Start.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) || !rep.DateRange.End.Equal(time.Date(2026, 12, 7, 23, 59, 59, 0, time.UTC)) ||
			p.Policy.Type != TypeNoPolicyFound || p.Policy.Domain != "verifyfail.example" ||
			p.Summary.Successful != 0 || p.Summary.Failed != 1 || len(f) != 1 ||
			f[0].ResultType != "certificate-not-trusted" || f[0].ReceivingMXHostname != "mx.verifyfail.example" ||
			f[0].ReceivingIP != "127.0.0.4" || f[0].FailedSessionCount != 1 || f[0].FailureReasonCode != "self-signed certificate" {
			t.Errorf("%s: report %s", where, js)
		}
	}
	mu.Lock()
	if postedType != "application/tlsrpt+gzip" {
		t.Errorf("POST Content-Type %q", postedType)
	}
	check("https", posted)
	mu.Unlock()

	box.mu.Lock()
	defer box.mu.Unlock()
	if len(box.msgs) != 1 || box.msgs[0].from != "tlspolicyd@mail.ourcorp.example" || strings.Join(box.msgs[0].to, ",") != "tlsrpt@reports.example" {
		t.Fatalf("mails %+v", box.msgs)
	}
	m, err := mail.ReadMessage(bytes.NewReader(box.msgs[0].data))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("Subject"); got != "Report Domain: verifyfail.example Submitter: mail.ourcorp.example Report-ID: <2026-12-07T00:00:00Z_verifyfail.example@mail.ourcorp.example>" {
		t.Errorf("Subject %q", got)
	}
	if m.Header.Get("TLS-Report-Domain") != "verifyfail.example" || m.Header.Get("TLS-Report-Submitter") != "mail.ourcorp.example" {
		t.Errorf("headers %v", m.Header)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	text, err := mr.NextPart()
	if err != nil || !strings.HasPrefix(text.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("first part %v %v", text, err)
	}
	att, err := mr.NextPart()
	if err != nil || att.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
		t.Fatalf("second part %v %v", att, err)
	}
	if fn := att.FileName(); fn != "mail.ourcorp.example!verifyfail.example!1796601600!1796687999.json.gz" {
		t.Errorf("file name %q", fn)
	}
	b64, _ := io.ReadAll(att)
	gz, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b64), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	check("mail", gz)
}

// TestRunSendsYesterdayOnce: the daemon's loop sends the reports of the
// UTC day before and records it, so the next round sends nothing.
func TestRunSendsYesterdayOnce(t *testing.T) {
	box, relay := startSink(t)
	zone := probetest.NewZone(t)
	zone.Add(t, `_smtp._tls.plain.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@plain.example"`)
	tr := maillogtest.Recorded(t, "testdata/postfix37-maillog-tls.txt")
	r := &Reporter{Meta: meta, DNS: &dnsq.Client{Server: zone.Addr, Timeout: 2 * time.Second},
		Sender: &Sender{SMTP: relay, From: "tlspolicyd@mail.ourcorp.example", Submitter: meta.Submitter},
		Now:    func() time.Time { return time.Date(2026, 12, 8, 0, 30, 0, 0, time.UTC) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, tr) }()
	deadline := time.Now().Add(10 * time.Second)
	for tr.Reported() != "2026-12-07" {
		if time.Now().After(deadline) {
			t.Fatal("not reported within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	box.mu.Lock()
	n := len(box.msgs)
	box.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
	// A second run (a restart) finds the day reported and sends nothing.
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); r.Run(ctx, tr) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	box.mu.Lock()
	defer box.mu.Unlock()
	if len(box.msgs) != 1 {
		t.Fatalf("%d mails after a second run, want 1", len(box.msgs))
	}
}

// TestRunRetries: a report the relay did not take is tried again at the
// next check and arrives once the relay is back; OnReported runs once.
func TestRunRetries(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // the relay is down at first
	zone := probetest.NewZone(t)
	zone.Add(t, `_smtp._tls.plain.example. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@plain.example"`)
	tr := maillogtest.Recorded(t, "testdata/postfix37-maillog-tls.txt")
	var reported sync.WaitGroup
	reported.Add(1)
	r := &Reporter{Meta: meta, DNS: &dnsq.Client{Server: zone.Addr, Timeout: 2 * time.Second},
		Sender:     &Sender{SMTP: addr, From: "tlspolicyd@mail.ourcorp.example", Submitter: meta.Submitter},
		Now:        func() time.Time { return time.Date(2026, 12, 8, 0, 30, 0, 0, time.UTC) },
		CheckEvery: 50 * time.Millisecond, OnReported: reported.Done}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx, tr) }()
	reported.Wait() // the first attempt failed
	box := &sink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: box}, nil }))
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		box.mu.Lock()
		n := len(box.msgs)
		box.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mails after the relay came back, want 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // no second copy
	cancel()
	<-done
	box.mu.Lock()
	defer box.mu.Unlock()
	if len(box.msgs) != 1 {
		t.Fatalf("%d mails, want 1", len(box.msgs))
	}
}

func TestDueDays(t *testing.T) {
	now := time.Date(2026, 12, 8, 0, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		reported string
		want     string
	}{
		{"", "2026-12-07"},
		{"2026-12-07", ""},
		{"2026-12-05", "2026-12-06 2026-12-07"},
		{"2026-11-01", "2026-12-01 2026-12-02 2026-12-03 2026-12-04 2026-12-05 2026-12-06 2026-12-07"},
		{"2026-12-09", ""}, // the clock went back
	} {
		if got := strings.Join(dueDays(tc.reported, now), " "); got != tc.want {
			t.Errorf("reported %q: %q, want %q", tc.reported, got, tc.want)
		}
	}
}

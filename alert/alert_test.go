package alert

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tlspolicyd/tlspolicyd/events"
)

// relay is a loopback go-smtp server that keeps what it receives. While
// fail is positive it refuses that many MAIL commands with a 451.
type relay struct {
	addr  string
	mu    sync.Mutex
	msgs  []received
	fail  atomic.Int32
	tries atomic.Int32
	got   chan struct{}
}

type received struct {
	from string
	to   []string
	data []byte
}

type relaySession struct {
	r    *relay
	from string
	to   []string
}

func (s *relaySession) Reset()        { s.from, s.to = "", nil }
func (s *relaySession) Logout() error { return nil }
func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	s.r.tries.Add(1)
	if s.r.fail.Add(-1) >= 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.from = from
	return nil
}
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.msgs = append(s.r.msgs, received{s.from, s.to, b})
	s.r.mu.Unlock()
	s.r.got <- struct{}{}
	return nil
}

func newRelay(t *testing.T, failures int32) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: l.Addr().String(), got: make(chan struct{}, 100)}
	r.fail.Store(failures)
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &relaySession{r: r}, nil }))
	srv.Domain = "relay.test"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r
}

// wait returns the next message the relay accepted.
func (r *relay) wait(t *testing.T) received {
	t.Helper()
	select {
	case <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no mail arrived at the relay")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[len(r.msgs)-1]
}

func (r *relay) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// decode parses a received message: subject (decoded) and body (quoted-
// printable decoded).
func decode(t *testing.T, m received) (hdr mail.Header, subject, body string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(m.data)))
	if err != nil {
		t.Fatalf("not a mail message: %v\n%s", err, m.data)
	}
	subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	return msg.Header, subject, string(b)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, cfg Config) *Notifier {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx1.ourcorp.example"
	}
	a := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

var (
	blocked = events.Event{
		Time: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), Kind: events.InboundBlocked, Domain: "bank.example",
		Rule: "bank-partners", Source: "table/inbound.yaml:3",
		Action: "450 4.7.10 TLS is required for mail from bank.example; ask its postmaster to enable STARTTLS",
		Reason: "TLS is required; the client sent without TLS", Client: "mx.bank.example[192.0.2.1]", Sender: "alice@bank.example",
	}
	expiring = events.Event{
		Time: time.Date(2026, 5, 1, 10, 0, 1, 0, time.UTC), Kind: events.CertExpiring, Domain: "lawfirm.example",
		Rule: "lawfirm.example", Source: "table/outbound.yaml:9", Action: "cert_expiring",
		Reason: "certificate of mx.lawfirm.example[192.0.2.7] for lawfirm.example expires 2026-05-06 (in 5 days); under verify mail will then be deferred",
	}
)

// The digest says which domain, which policy, what failed and what to do,
// in the words of the hosted services' notices; it goes to every address
// of mail_to through the relay.
func TestDigestMail(t *testing.T) {
	r := newRelay(t, 0)
	a := start(t, Config{MailTo: "postmaster@ourcorp.example, security@ourcorp.example", SMTP: r.addr, Delay: 50 * time.Millisecond})
	a.Notify(blocked)
	a.Notify(expiring)
	m := r.wait(t)
	if m.from != "tlspolicyd@mx1.ourcorp.example" || strings.Join(m.to, " ") != "postmaster@ourcorp.example security@ourcorp.example" {
		t.Errorf("envelope from %q to %q", m.from, m.to)
	}
	hdr, subject, body := decode(t, m)
	if subject != "[tlspolicyd] 2 TLS policy alerts: bank.example, lawfirm.example" {
		t.Errorf("Subject: %q", subject)
	}
	if hdr.Get("Auto-Submitted") != "auto-generated" || hdr.Get("Message-Id") == "" || hdr.Get("Date") == "" {
		t.Errorf("headers: %v", hdr)
	}
	for _, want := range []string{
		"1. Mail from bank.example deferred: TLS policy not met",
		"unable to accept messages from the following domain because the domain's mail server did not establish a TLS connection",
		"Domain:       bank.example",
		`Policy:       inbound rule "bank-partners", table/inbound.yaml:3`,
		"What failed:  TLS is required; the client sent without TLS",
		"Client:       mx.bank.example[192.0.2.1]",
		"Sender:       alice@bank.example",
		"Recommended action: Contact the email administrator for bank.example",
		"2. Certificate of a lawfirm.example mail server expires soon",
		`Policy:       outbound entry "lawfirm.example", table/outbound.yaml:9`,
		"expires 2026-05-06",
		"ask them to renew the certificate",
	} {
		if !strings.Contains(body, want) && !strings.Contains(strings.Join(strings.Fields(body), " "), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if len(line) > 78 {
			t.Errorf("line longer than 78: %q", line)
		}
	}
}

// At most one alert per domain and kind per interval: repeats within the
// gathering delay fold into the alert, later ones into a reminder once the
// interval is over.
func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	var got []Payload
	var at []time.Time // when each payload arrived
	arrived := make(chan struct{}, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		mu.Lock()
		got = append(got, p)
		at = append(at, time.Now())
		mu.Unlock()
		arrived <- struct{}{}
	}))
	defer hook.Close()
	const interval = time.Second
	a := start(t, Config{Webhook: hook.URL, Delay: 50 * time.Millisecond, Interval: interval})
	waitHook := func() (Payload, time.Time) {
		t.Helper()
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("no webhook call")
		}
		mu.Lock()
		defer mu.Unlock()
		return got[len(got)-1], at[len(at)-1]
	}

	other := blocked
	other.Domain = "other.example"
	for range 3 {
		a.Notify(blocked)
	}
	a.Notify(other)
	p, firstAt := waitHook()
	if len(p.Alerts) != 2 || p.Alerts[0].Domain != "bank.example" || p.Alerts[0].Repeats != 3 || p.Alerts[1].Repeats != 1 {
		t.Fatalf("first digest: %+v", p.Alerts)
	}
	// Within the interval: counted, not sent. The next call must be one
	// reminder counting them, once the interval is over: an alert sent
	// early would be that call, and arrive about Delay after them.
	for range 5 {
		a.Notify(blocked)
	}
	p, reminderAt := waitHook()
	if len(p.Alerts) != 1 || p.Alerts[0].Domain != "bank.example" || p.Alerts[0].Repeats != 5 {
		t.Fatalf("second call, want the reminder counting 5: %+v", p.Alerts)
	}
	if gap := reminderAt.Sub(firstAt); gap < interval/2 {
		t.Errorf("reminder arrived %v after the first alert, within the interval (%v)", gap, interval)
	}
	if s := a.Stats(); s.Suppressed != 2+5 {
		t.Errorf("Suppressed = %d, want 7", s.Suppressed)
	}
	if !strings.Contains(p.Text, "Mail from bank.example deferred") || p.Source != "tlspolicyd" || p.Host != "mx1.ourcorp.example" {
		t.Errorf("payload: %+v", p)
	}
	if p.Alerts[0].RecommendedAction == "" || p.Alerts[0].Rule != "bank-partners" || p.Alerts[0].Source != "table/inbound.yaml:3" {
		t.Errorf("alert fields: %+v", p.Alerts[0])
	}
}

// A failing relay is retried with back-off, and what arrives meanwhile goes
// into the same, later digest.
func TestMailRetried(t *testing.T) {
	r := newRelay(t, 2)
	a := start(t, Config{MailTo: "postmaster@ourcorp.example", SMTP: r.addr, Delay: 10 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	a.Notify(blocked)
	// The second event comes after the first attempt failed: it must join
	// the digest being retried.
	waitFor(t, "the first failed attempt", func() bool { return a.Stats().Failed >= 1 })
	a.Notify(expiring)
	_, subject, _ := decode(t, r.wait(t))
	if r.tries.Load() != 3 {
		t.Errorf("relay saw %d attempts, want 3 (two 451s, then success)", r.tries.Load())
	}
	if !strings.Contains(subject, "2 TLS policy alerts") {
		t.Errorf("the retried digest should carry both alerts: %q", subject)
	}
	deadline := time.Now().Add(5 * time.Second) // Sent counts once the relay's reply is read
	for a.Stats().Sent == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := a.Stats(); s.Failed != 2 || s.Sent != 1 {
		t.Errorf("stats %+v, want 2 failed, 1 sent", s)
	}
}

// tarpit returns the address of a loopback relay that accepts connections
// and never sends a banner, and a func that closes it and them (called
// when the test ends, if not before).
func tarpit(t *testing.T) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	stop = func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// A relay that accepts the connection and never answers delays nothing:
// Notify returns at once, drops and counts what does not fit the queue.
func TestNotifyNeverBlocks(t *testing.T) {
	relay, stop := tarpit(t)
	defer stop() // before the alerter's shutdown, whose last attempt would wait for it
	var out syncBuffer
	a := start(t, Config{MailTo: "postmaster@ourcorp.example", SMTP: relay, Delay: time.Millisecond,
		Queue: 16, Timeout: time.Hour, Logger: slog.New(slog.NewTextHandler(&out, nil))})
	done := make(chan struct{})
	go func() {
		for i := range 100000 {
			e := blocked
			e.Domain = strings.Repeat("x", i%50) + ".example"
			a.Notify(e)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Notify blocked behind a hanging relay")
	}
	if a.Stats().Dropped == 0 {
		t.Error("nothing dropped: 100000 events cannot all have fit a 16-event queue… or did Notify block?")
	}
	// Logged, but once a minute, not once an event.
	if n := strings.Count(out.String(), "alert queue full"); n != 1 {
		t.Errorf("drops logged %d times, want once:\n%s", n, out.String())
	}
}

// syncBuffer is a log output written by the alerter's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestWebhookRetriesAndGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		statuses []int
		calls    int32
		sent     uint64
	}{
		{"5xx then success", []int{503, 500, 200}, 3, 1},
		{"429 is retried", []int{429, 204}, 2, 1},
		{"4xx is final", []int{404}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var secretSeen atomic.Bool
			var mu sync.Mutex
			var domains [][]string // the alerts' domains, per call
			hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
					t.Errorf("%s with %q", r.Method, r.Header.Get("Content-Type"))
				}
				secretSeen.Store(r.URL.Query().Get("token") == "s3cret")
				var p Payload
				if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
					t.Errorf("webhook body: %v", err)
				}
				var ds []string
				for _, al := range p.Alerts {
					ds = append(ds, al.Domain)
				}
				mu.Lock()
				domains = append(domains, ds)
				mu.Unlock()
				w.WriteHeader(tc.statuses[min(int(n), len(tc.statuses))-1])
			}))
			defer hook.Close()
			a := start(t, Config{Webhook: hook.URL + "/hook?token=s3cret", Delay: time.Millisecond,
				MinBackoff: 20 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
			a.Notify(blocked)
			waitFor(t, "the expected webhook calls", func() bool { return calls.Load() >= tc.calls })
			waitFor(t, "the outcome", func() bool {
				s := a.Stats()
				return s.Sent == tc.sent && s.Failed == uint64(tc.calls)-tc.sent
			})
			// A later alert of another domain: the sink handles one digest
			// at a time, so a wrong extra attempt for the first would come
			// before it, or ride along with it.
			barrier := blocked
			barrier.Domain = "barrier.example"
			a.Notify(barrier)
			waitFor(t, "the later alert", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return slices.ContainsFunc(domains, func(ds []string) bool { return slices.Contains(ds, "barrier.example") })
			})
			mu.Lock()
			want := make([][]string, tc.calls)
			for i := range want {
				want[i] = []string{"bank.example"}
			}
			want = append(want, []string{"barrier.example"})
			if !slices.EqualFunc(domains, want, slices.Equal) {
				t.Errorf("webhook calls carried %q, want %q", domains, want)
			}
			mu.Unlock()
			if !secretSeen.Load() {
				t.Error("webhook URL query lost")
			}
		})
	}
}

// A digest pending at shutdown gets one last attempt.
func TestShutdownFlushes(t *testing.T) {
	r := newRelay(t, 0)
	a := New(Config{MailTo: "postmaster@ourcorp.example", SMTP: r.addr, Delay: time.Hour, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	a.Notify(blocked) // queued; Run may not have taken it yet: shutdown drains the queue
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.count() != 1 {
		t.Fatalf("%d mails at shutdown, want 1", r.count())
	}
}

func TestDisabled(t *testing.T) {
	a := New(Config{Logger: quiet()})
	if a.Enabled() {
		t.Fatal("enabled without mail_to or webhook")
	}
	a.Notify(blocked) // no queue to fill, nothing counted
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Run(ctx); err != nil || a.Stats() != (Stats{}) {
		t.Fatalf("Run = %v, stats %+v", err, a.Stats())
	}
}

// Every kind gets a title, an explanation of what it means and a
// recommended action naming the domain; header-breaking text from the
// network cannot reach the headers.
func TestTexts(t *testing.T) {
	for _, tc := range []struct {
		ev                   events.Event
		title, explain, todo string
	}{
		{blocked, "Mail from bank.example deferred", "did not establish a TLS connection", "Contact the email administrator for bank.example"},
		{func() events.Event { e := blocked; e.Action = "550 5.7.10 …"; return e }(), "Mail from bank.example rejected", "get a bounce", "testing: true"},
		{events.Event{Kind: events.InboundWouldBlock, Domain: "partner.example", Rule: "partner-relay", Action: "would defer"},
			"would be refused", "Nothing was blocked", "before the rule is enforced"},
		{events.Event{Kind: events.OutboundProbeFailed, Domain: "lawfirm.example", Action: "testing", Source: "t.yaml:4"},
			"Enforcing TLS for lawfirm.example would defer mail", "Mail still flows", "Keep testing: true on the entry at t.yaml:4"},
		{events.Event{Kind: events.OutboundProbeFailed, Domain: "plainbank.example", Action: string(events.OutboundProbeFailed)},
			"Mail to plainbank.example is deferred", "unable to deliver messages to the following domain", "Contact the email administrator for plainbank.example"},
		{events.Event{Kind: events.BackupMXFailed, Domain: "mixed.example", Action: string(events.BackupMXFailed)},
			"A backup MX of mixed.example cannot meet the TLS policy", "Mail is delivered through the one that can", "so that the backup works under the policy too"},
		{events.Event{Kind: events.LearnedDowngrade, Domain: "shop.example"}, "shop.example stopped offering STARTTLS", "downgrade attack", "add an explicit entry"},
		{events.Event{Kind: events.CacheCorrupt, Source: "/var/lib/tlspolicyd/probes.json", Reason: "probe cache … is corrupt"},
			"Probe cache file damaged: learned policies may be lost", "kept the file aside", "list them as outbound entries"},
		{events.Event{Kind: events.LearnedEvicted, Domain: "shop.example"}, "Learned encryption to shop.example dropped early",
			"dropped this one, the least recently confirmed, before learn_max_age", "add an explicit outbound entry for it"},
		{expiring, "expires soon", "verify or secure", "renew the certificate"},
		{events.Event{Kind: events.ReloadFailed, Reason: "table/a.yaml:3: unknown level \"encrpyt\""}, "Policy table change rejected", "previous table keeps serving", "tlspolicyd check"},
		{events.Event{Kind: events.ProberBlind, Reason: "the last 3 probes all failed temporarily"}, "TLS prober blind", "not being checked", "probe.resolver"},
	} {
		t.Run(string(tc.ev.Kind), func(t *testing.T) {
			al := Alert{Event: tc.ev, Repeats: 1}
			describe(&al)
			for what, c := range map[string][2]string{"title": {al.Title, tc.title}, "explanation": {al.Explanation, tc.explain}, "action": {al.RecommendedAction, tc.todo}} {
				if !strings.Contains(c[0], c[1]) {
					t.Errorf("%s %q lacks %q", what, c[0], c[1])
				}
			}
		})
	}

	evil := blocked
	evil.Domain = "evil.example\r\nBcc: victim@example.org"
	al := Alert{Event: evil, Repeats: 1}
	describe(&al)
	msg := composeMail([]Alert{al}, "tlspolicyd@h", []string{"pm@h"}, "h", time.Hour, time.Now())
	head, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	if strings.Contains(head, "\r\nBcc:") {
		t.Fatalf("header injection:\n%s", head)
	}
	if _, err := mail.ReadMessage(strings.NewReader(string(msg))); err != nil {
		t.Fatal(err)
	}
}

// hookStub is a loopback webhook receiver that keeps every payload.
type hookStub struct {
	url     string
	mu      sync.Mutex
	got     []Payload
	arrived chan struct{}
}

func newHookStub(t *testing.T) *hookStub {
	t.Helper()
	h := &hookStub{arrived: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		h.mu.Lock()
		h.got = append(h.got, p)
		h.mu.Unlock()
		h.arrived <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

func (h *hookStub) payloads() []Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Payload(nil), h.got...)
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Shutdown loses nothing the rate limit held back: one event alerted, five
// more of the same domain and kind within the interval, then the context
// ends: a reminder counting the five goes out before Run returns, through
// the webhook and through the relay alike.
func TestShutdownSendsHeldBackReminders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, cfg *Config) (deliveries func() int, last func() string)
		remind string // what the last delivery must contain
	}{
		{"webhook", func(t *testing.T, cfg *Config) (func() int, func() string) {
			h := newHookStub(t)
			cfg.Webhook = h.url
			return func() int { return len(h.payloads()) }, func() string {
				p := h.payloads()
				b, _ := json.Marshal(p[len(p)-1])
				return string(b)
			}
		}, `"repeats":5`},
		{"mail", func(t *testing.T, cfg *Config) (func() int, func() string) {
			r := newRelay(t, 0)
			cfg.MailTo, cfg.SMTP = "postmaster@ourcorp.example", r.addr
			return r.count, func() string {
				r.mu.Lock()
				m := r.msgs[len(r.msgs)-1]
				r.mu.Unlock()
				_, _, body := decode(t, m)
				return strings.Join(strings.Fields(body), " ")
			}
		}, "Occurrences: 5 since"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Delay: 10 * time.Millisecond, Interval: time.Hour, Logger: quiet(), Hostname: "mx1.ourcorp.example"}
			deliveries, last := tc.setup(t, &cfg)
			a := New(cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- a.Run(ctx) }()

			a.Notify(blocked)
			waitFor(t, "the first alert", func() bool { return a.Stats().Sent == 1 })
			for range 5 {
				a.Notify(blocked)
			}
			waitFor(t, "the repeats to be counted", func() bool { return a.Stats().Suppressed == 5 })
			if n := deliveries(); n != 1 {
				t.Fatalf("%d deliveries within the interval, want 1", n)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := deliveries(); n != 2 {
				t.Fatalf("%d deliveries after shutdown, want 2 (the alert, then the reminder)", n)
			}
			if got := last(); !strings.Contains(got, tc.remind) || !strings.Contains(got, "bank.example") {
				t.Errorf("reminder lacks %q:\n%s", tc.remind, got)
			}
			if s := a.Stats(); s != (Stats{Suppressed: 5, Sent: 2}) {
				t.Errorf("stats %+v, want 5 suppressed, 2 sent", s)
			}
		})
	}
}

// Events still queued when Run's context ends (published while the
// servers drained) go into the last digest.
func TestShutdownDeliversQueuedEvents(t *testing.T) {
	h := newHookStub(t)
	a := New(Config{Webhook: h.url, Delay: time.Hour, Logger: quiet()})
	other := expiring
	a.Notify(blocked)
	a.Notify(other)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Run starts with its context already over: only the queue is left
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	p := h.payloads()
	if len(p) != 1 || len(p[0].Alerts) != 2 {
		t.Fatalf("payloads %+v, want one digest of 2 alerts", p)
	}
}

// A relay that never answers cannot hold up shutdown: the last attempt is
// bounded, counted as failed and logged.
func TestShutdownBoundedByDeadRelay(t *testing.T) {
	relay, _ := tarpit(t)
	a := New(Config{MailTo: "postmaster@ourcorp.example", SMTP: relay, Delay: time.Hour,
		Timeout: 200 * time.Millisecond, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	a.Notify(blocked)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still delivering 5 s after shutdown, behind a relay that never answers")
	}
	if s := a.Stats(); s.Failed != 1 || s.Sent != 0 {
		t.Errorf("stats %+v, want 1 failed", s)
	}
}

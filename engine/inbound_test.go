package engine

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// fixture reads a policy request recorded from Postfix 3.7 and applies
// overrides (name=value).
func fixture(t testing.TB, name string, overrides ...string) *policyd.Request {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req := &policyd.Request{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			req.Set(k, v)
		}
	}
	for _, o := range overrides {
		k, v, _ := strings.Cut(o, "=")
		req.Set(k, v)
	}
	return req
}

const (
	plain   = "postfix37-rcpt-plain.txt"             // alice@bank.example -> legal@ourcorp.example, no TLS
	tls13   = "postfix37-rcpt-tls13.txt"             // TLSv1.3, no client cert
	tls12cc = "postfix37-rcpt-tls12-client-cert.txt" // TLSv1.2 with unverified client cert
	null    = "postfix37-rcpt-null-sender.txt"       // MAIL FROM:<>
	fpTLS12 = "21:C7:E4:04:AF:B2:95:05:4A:C0:0B:4C:2C:0E:48:3B:43:8B:97:C8:5E:09:B1:EB:EF:D5:79:8F:C4:8A:BC:B9"
)

func testRules() []*store.InboundRule {
	src := func(line int) store.Source { return store.Source{File: "inbound.yaml", Line: line} }
	return []*store.InboundRule{
		{Name: "bank", From: []string{"bank.example", ".bank.example"}, Require: "tls1.2", Action: "defer", Source: src(1)},
		{Name: "legal", To: []string{"legal@ourcorp.example"}, Require: "tls", Action: "reject", Source: src(2)},
		{Name: "tls13-only", From: []string{"modern.example"}, Require: "tls1.3", Action: "defer", Source: src(3)},
		{Name: "pinned", From: []string{"pinned.example"}, Require: "fingerprint", Fingerprints: []string{fpTLS12}, Action: "defer", Source: src(4)},
		{Name: "cert", Client: []string{"192.0.2.0/24", "2001:db8::/32"}, Require: "cert", Action: "defer", Source: src(5)},
		{Name: "pilot", From: []string{"pilot.example"}, Require: "tls", Action: "defer", Testing: true, Header: "X-TLS-Policy", Source: src(6)},
		{Name: "quiet-pilot", From: []string{"quiet.example"}, Require: "tls", Action: "defer", Testing: true, Source: src(7)},
		{Name: "bounces", From: []string{"<>"}, To: []string{"postmaster@ourcorp.example"}, Require: "tls", Action: "defer", Source: src(8)},
		{Name: "partner-host", Client: []string{".mx.partner.example"}, Require: "tls", Action: "defer", Source: src(9)},
	}
}

func TestInboundDecisions(t *testing.T) {
	ix := newInboundIndex(testRules())
	tests := []struct {
		name      string
		fixture   string
		overrides []string
		want      string // exact action, or prefix when ending in "…"
		rule      string
	}{
		{"enforced recipient rejects plaintext (reject beats defer)", plain, nil,
			"550 5.7.10 TLS is required for mail to legal@ourcorp.example (rule legal): the connection was not encrypted; ask the postmaster of bank.example to enable STARTTLS", "legal"},
		{"sender domain rule defers plaintext", plain, []string{"recipient=bob@ourcorp.example"},
			"450 4.7.10 TLS 1.2 or newer is required for mail from bank.example (rule bank): the connection was not encrypted; ask the postmaster of bank.example to enable STARTTLS with TLS 1.2 or newer", "bank"},
		{"subdomain rule", plain, []string{"recipient=bob@ourcorp.example", "sender=x@mail.bank.example"}, "450 4.7.10 TLS 1.2 or newer is required for mail from mail.bank.example…", "bank"},
		{"TLS 1.3 meets tls1.2", tls13, []string{"sender=alice@bank.example", "recipient=bob@ourcorp.example"}, "DUNNO", ""},
		{"TLS 1.2 meets tls1.2", tls12cc, []string{"sender=alice@bank.example", "recipient=bob@ourcorp.example"}, "DUNNO", ""},
		{"TLS 1.1 fails tls1.2", tls12cc, []string{"sender=alice@bank.example", "recipient=bob@ourcorp.example", "encryption_protocol=TLSv1.1"},
			"450 4.7.10 TLS 1.2 or newer is required for mail from bank.example (rule bank): the connection used TLSv1.1; …", "bank"},
		{"TLS 1.2 fails tls1.3", tls12cc, []string{"sender=a@modern.example", "recipient=bob@ourcorp.example"}, "450 4.7.10 TLS 1.3 is required for mail from modern.example…", "tls13-only"},
		{"right pinned fingerprint", tls12cc, []string{"sender=a@pinned.example", "recipient=bob@ourcorp.example", "ccert_fingerprint=" + strings.ToLower(fpTLS12)}, "DUNNO", ""},
		{"wrong pinned fingerprint", tls12cc, []string{"sender=a@pinned.example", "recipient=bob@ourcorp.example", "ccert_fingerprint=AA:BB", "ccert_pubkey_fingerprint=CC:DD"},
			"450 4.7.10 a registered TLS client certificate is required for mail from pinned.example (rule pinned): the client certificate presented is not the one on record…", "pinned"},
		{"pinned without TLS", plain, []string{"sender=a@pinned.example", "recipient=bob@ourcorp.example"}, "450 4.7.10 TLS with a registered client certificate is required…", "pinned"},
		{"client CIDR needs cert, none presented", tls13, []string{"sender=a@other.example", "recipient=bob@ourcorp.example", "client_address=192.0.2.77"},
			"450 4.7.10 a TLS client certificate is required for mail from localhost (rule cert): no client certificate was presented; ask the postmaster of other.example to configure a TLS client certificate", "cert"},
		{"client IPv6 CIDR with cert passes", tls12cc, []string{"sender=a@other.example", "recipient=bob@ourcorp.example", "client_address=2001:db8::25"}, "DUNNO", ""},
		{"client outside CIDR", tls13, []string{"sender=a@other.example", "recipient=bob@ourcorp.example", "client_address=198.51.100.1"}, "DUNNO", ""},
		{"verified client name suffix", plain, []string{"sender=a@other.example", "recipient=bob@ourcorp.example", "client_name=out1.mx.partner.example"}, "450 4.7.10 TLS is required for mail from out1.mx.partner.example (rule partner-host)…", "partner-host"},
		{"unverified client name never matches", plain, []string{"sender=a@other.example", "recipient=bob@ourcorp.example", "client_name=unknown", "reverse_client_name=out1.mx.partner.example"}, "DUNNO", ""},
		{"testing rule with header prepends", plain, []string{"sender=a@pilot.example", "recipient=bob@ourcorp.example"},
			"PREPEND X-TLS-Policy: would defer (rule pilot): TLS is required; the connection was not encrypted", "pilot"},
		{"testing rule without header is DUNNO", plain, []string{"sender=a@quiet.example", "recipient=bob@ourcorp.example"}, "DUNNO", ""},
		{"null sender does not match domain rules", null, []string{"recipient=bob@ourcorp.example", "client_address=127.0.0.1"}, "DUNNO", ""},
		{"null sender matches a rule naming <>", null, []string{"recipient=postmaster@ourcorp.example"}, "450 4.7.10 TLS is required for mail to postmaster@ourcorp.example (rule bounces)…", "bounces"},
		{"MAIL stage: no recipient yet, to-rules do not match", plain, []string{"protocol_state=MAIL", "recipient=", "sender=x@other.example"}, "DUNNO", ""},
		{"MAIL stage: sender rules already apply", plain, []string{"protocol_state=MAIL", "recipient="}, "450 4.7.10 TLS 1.2 or newer is required for mail from bank.example…", "bank"},
		{"unrelated sender unaffected", plain, []string{"sender=someone@elsewhere.example", "recipient=bob@ourcorp.example"}, "DUNNO", ""},
		{"case-insensitive match", plain, []string{"sender=Alice@BANK.Example", "recipient=bob@ourcorp.example"}, "450 4.7.10 TLS 1.2 or newer is required for mail from bank.example…", "bank"},
		{"parent domain itself is not a subdomain", plain, []string{"sender=a@example", "recipient=bob@ourcorp.example"}, "DUNNO", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fromRequest(fixture(t, tt.fixture, tt.overrides...))
			d := ix.evaluate(&in, nil)
			if p, ok := strings.CutSuffix(tt.want, "…"); ok {
				if !strings.HasPrefix(d.Action, p) {
					t.Errorf("action = %q\nwant prefix %q", d.Action, p)
				}
			} else if d.Action != tt.want {
				t.Errorf("action = %q\nwant          %q", d.Action, tt.want)
			}
			got := ""
			if d.Rule != nil {
				got = d.Rule.Name
			}
			if got != tt.rule {
				t.Errorf("deciding rule = %q, want %q", got, tt.rule)
			}
			if strings.HasPrefix(d.Action, "OK") {
				t.Error("never OK")
			}
		})
	}
}

// Address rules cover the address with a +extension too (Postfix's usual
// recipient_delimiter "+": legal+x@ourcorp.example is the mailbox
// legal@ourcorp.example), for to: and from:, whatever the case; domain
// rules and other mailboxes are unaffected.
func TestInboundAddressExtensions(t *testing.T) {
	src := store.Source{File: "inbound.yaml", Line: 1}
	ix := newInboundIndex([]*store.InboundRule{
		{Name: "legal", To: []string{"legal@ourcorp.example"}, Require: "tls", Action: "reject", Source: src},
		{Name: "alice", From: []string{"alice@partner.example"}, Require: "tls", Action: "defer", Source: src},
		{Name: "exact-ext", To: []string{"sales+eu@ourcorp.example"}, Require: "tls", Action: "defer", Source: src},
		{Name: "bounces", From: []string{"<>"}, To: []string{"postmaster@ourcorp.example"}, Require: "tls", Action: "defer", Source: src},
	})
	tests := []struct {
		name, sender, recipient string
		rule                    string // deciding rule; "" for DUNNO
	}{
		{"recipient with +extension", "x@other.example", "legal+x@ourcorp.example", "legal"},
		{"recipient with +extension, upper case", "x@other.example", "Legal+Invoices@OurCorp.Example", "legal"},
		{"recipient with several +", "x@other.example", "legal+a+b@ourcorp.example", "legal"},
		{"recipient with empty extension", "x@other.example", "legal+@ourcorp.example", "legal"},
		{"recipient with trailing dot", "x@other.example", "legal+x@ourcorp.example.", "legal"},
		{"recipient exact", "x@other.example", "legal@ourcorp.example", "legal"},
		{"other mailbox sharing the prefix", "x@other.example", "legalteam@ourcorp.example", ""},
		{"+ at the start is not an extension", "x@other.example", "+legal@ourcorp.example", ""},
		{"extension does not change the domain", "x@other.example", "legal+x@ourcorp.example.net", ""},
		{"sender with +extension", "alice+news@partner.example", "bob@ourcorp.example", "alice"},
		{"sender with +extension, upper case", "ALICE+News@Partner.Example", "bob@ourcorp.example", "alice"},
		{"other sender", "alicia+news@partner.example", "bob@ourcorp.example", ""},
		{"rule naming an extension matches it exactly", "x@other.example", "sales+eu@ourcorp.example", "exact-ext"},
		{"rule naming an extension: other extension", "x@other.example", "sales+us@ourcorp.example", ""},
		{"rule naming an extension: bare mailbox", "x@other.example", "sales@ourcorp.example", ""},
		{"null sender rule with +extension recipient", "", "postmaster+x@ourcorp.example", "bounces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fromRequest(fixture(t, plain, "sender="+tt.sender, "recipient="+tt.recipient))
			d := ix.evaluate(&in, nil)
			got := ""
			if d.Rule != nil {
				got = d.Rule.Name
			}
			if got != tt.rule {
				t.Errorf("sender %q, recipient %q: rule %q (action %q), want %q", tt.sender, tt.recipient, got, d.Action, tt.rule)
			}
			if tt.rule == "" && d.Action != "DUNNO" {
				t.Errorf("action %q, want DUNNO", d.Action)
			}
		})
	}
}

// A rule naming several dimensions (from, to, client) matches only a
// request that every one of them covers; within a dimension any pattern
// will do.
func TestInboundEveryDimension(t *testing.T) {
	src := store.Source{File: "inbound.yaml", Line: 1}
	ix := newInboundIndex([]*store.InboundRule{
		{Name: "from-to", From: []string{"bank.example", ".bank.example"}, To: []string{"treasury@ourcorp.example", "ledger.ourcorp.example"},
			Require: "tls", Action: "defer", Source: src},
		{Name: "from-client", From: []string{"alice@partner.example"}, Client: []string{"198.51.100.0/24", ".mx.partner.example"},
			Require: "tls", Action: "defer", Source: src},
		{Name: "all-three", From: []string{"shop.example"}, To: []string{".ourcorp.example"}, Client: []string{"2001:db8::/32"},
			Require: "tls", Action: "defer", Source: src},
	})
	tests := []struct {
		name, sender, recipient, clientAddr, clientName string
		rule                                            string
	}{
		{"from and to", "x@bank.example", "treasury@ourcorp.example", "203.0.113.1", "unknown", "from-to"},
		{"from (subdomain) and to (domain)", "x@mail.bank.example", "y@ledger.ourcorp.example", "203.0.113.1", "unknown", "from-to"},
		{"from without to", "x@bank.example", "bob@ourcorp.example", "203.0.113.1", "unknown", ""},
		{"to without from", "x@other.example", "treasury@ourcorp.example", "203.0.113.1", "unknown", ""},
		{"from and to, no recipient yet", "x@bank.example", "", "203.0.113.1", "unknown", ""},
		{"from and client address", "alice@partner.example", "bob@ourcorp.example", "198.51.100.7", "unknown", "from-client"},
		{"from and client name", "alice@partner.example", "bob@ourcorp.example", "203.0.113.1", "out.mx.partner.example", "from-client"},
		{"from, client elsewhere", "alice@partner.example", "bob@ourcorp.example", "203.0.113.1", "mx.elsewhere.example", ""},
		{"client without from", "bob@partner.example", "bob@ourcorp.example", "198.51.100.7", "unknown", ""},
		{"all three", "a@shop.example", "b@x.ourcorp.example", "2001:db8::1", "unknown", "all-three"},
		{"all three, IPv4-mapped client", "a@shop.example", "b@x.ourcorp.example", "::ffff:198.51.100.7", "unknown", ""},
		{"two of three", "a@shop.example", "b@ourcorp.example", "2001:db8::1", "unknown", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fromRequest(fixture(t, plain, "sender="+tt.sender, "recipient="+tt.recipient,
				"client_address="+tt.clientAddr, "client_name="+tt.clientName))
			d := ix.evaluate(&in, nil)
			var got []string
			for _, m := range d.Matched {
				got = append(got, m.Rule.Name)
			}
			want := []string{tt.rule}
			if tt.rule == "" {
				want = nil
			}
			if !slices.Equal(got, want) {
				t.Errorf("matched %q, want %q", got, want)
			}
		})
	}
}

func TestCheckEventsAndStats(t *testing.T) {
	s := buildStore(t, `
inbound:
  - name: bank
    from: [bank.example]
    require: tls
  - name: pilot
    from: [pilot.example]
    require: tls
    testing: true
    header: X-TLS-Policy
`)
	ev := events.NewRing(10)
	e := New(s, nil, ev, nil)
	ctx := context.Background()
	a, err := e.Check(ctx, fixture(t, plain, "recipient=bob@ourcorp.example"))
	if err != nil || !strings.HasPrefix(string(a), "450 4.7.10 TLS is required for mail from bank.example") {
		t.Fatalf("Check = %q, %v", a, err)
	}
	// A second recipient of the same message (same instance) is not counted again.
	if _, err := e.Check(ctx, fixture(t, plain, "recipient=carol@ourcorp.example")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Check(ctx, fixture(t, tls13, "sender=x@bank.example", "instance=other")); err != nil {
		t.Fatal(err)
	}
	a, _ = e.Check(ctx, fixture(t, plain, "sender=p@pilot.example", "instance=p1"))
	if !strings.HasPrefix(string(a), "PREPEND X-TLS-Policy: would defer (rule pilot)") {
		t.Fatalf("testing rule: %q", a)
	}
	got := ev.Recent(0)
	if len(got) != 3 || got[0].Kind != events.InboundWouldBlock || got[1].Kind != events.InboundBlocked {
		t.Fatalf("events = %+v", got)
	}
	if got[1].Domain != "bank.example" || got[1].Rule != "bank" || !strings.HasSuffix(got[1].Source, ":3") {
		t.Errorf("blocked event = %+v", got[1])
	}
	var bank *DomainStats
	for _, d := range e.Stats().Snapshot() {
		if d.Domain == "bank.example" {
			bank = &d
		}
	}
	if bank == nil || bank.WithoutTLS != 1 || bank.WithTLS != 1 || bank.Versions["TLSv1.3"] != 1 {
		t.Errorf("bank.example stats = %+v", bank)
	}
}

func TestCheckFailsClosedWithoutTable(t *testing.T) {
	e := New(nil, nil, nil, nil)
	if a, err := e.Check(context.Background(), fixture(t, plain)); err == nil {
		t.Fatalf("Check without table = %q, want error (the server answers 450)", a)
	}
}

func TestStatsBoundsDomains(t *testing.T) {
	s := newStats(2)
	for _, d := range []string{"a.example", "b.example", "c.example", "d.example"} {
		s.Observe("", "x@"+d, "")
	}
	snap := s.Snapshot()
	if len(snap) != 3 || snap[0].Domain != "(other)" || snap[0].WithoutTLS != 2 {
		t.Errorf("snapshot = %+v", snap)
	}
}

func buildStore(t testing.TB, yaml string) *store.Store {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "table.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := store.Load(filepath.Join(dir, "table.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRegisteredFingerprint checks that the allocation-free fingerprint
// check agrees with normFingerprint on every form Postfix or a person
// might write.
func TestRegisteredFingerprint(t *testing.T) {
	fps := []string{"AB:CD:EF:01", "0123456789abcdef", " ab:cd ", "ÄB:CD", strings.Repeat("ab:", 64) + "ff"}
	r := compileRule(&store.InboundRule{Name: "r", Require: "fingerprint", Fingerprints: fps})
	for _, in := range append(fps, "abcdef01", "AB:CD:EF:02", "", ":", "äb:cd", "ÄBCD", "\tABCDEF01\n", "ab:cd:ef:01:", strings.Repeat("AB", 64)+"FF", "ſ") {
		if got, want := r.registered(in), r.fingerprints[normFingerprint(in)]; got != want {
			t.Errorf("registered(%q) = %v, normFingerprint says %v", in, got, want)
		}
	}
}

// A client prefix written IPv4-mapped (::ffff:a.b.c.d/len) covers the
// IPv4 clients it names: Postfix's client_address is matched unmapped, so
// the table stores the IPv4 prefix. Before, such a rule loaded and never
// matched.
func TestInboundMappedClientPrefix(t *testing.T) {
	s := buildStore(t, `
inbound:
  - name: mapped
    client: ["::ffff:198.51.100.0/120"]
    require: tls
  - name: mapped-all
    from: [all.example]
    client: ["::ffff:0.0.0.0/96"]
    require: tls
`)
	if got := s.InboundRules()[0].Client; !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("stored client %q, want the IPv4 prefix", got)
	}
	ix := newInboundIndex(s.InboundRules())
	for _, tc := range []struct{ sender, client, rule string }{
		{"x@other.example", "198.51.100.5", "mapped"},
		{"x@other.example", "::ffff:198.51.100.5", "mapped"},
		{"x@other.example", "198.51.101.5", ""},
		{"x@all.example", "203.0.113.9", "mapped-all"},
		{"x@all.example", "2001:db8::1", ""},
	} {
		in := fromRequest(fixture(t, plain, "sender="+tc.sender, "client_address="+tc.client))
		d := ix.evaluate(&in, nil)
		got := ""
		if d.Rule != nil {
			got = d.Rule.Name
		}
		if got != tc.rule {
			t.Errorf("sender %s, client %s: rule %q, want %q", tc.sender, tc.client, got, tc.rule)
		}
	}
}

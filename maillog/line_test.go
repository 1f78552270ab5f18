package maillog

import (
	"testing"
	"time"
)

func TestParseSyslogFormats(t *testing.T) {
	now := time.Date(2026, 12, 7, 18, 0, 0, 0, time.UTC)
	msg := "Verified TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
	tests := []struct {
		line string
		want time.Time
	}{
		{"Dec 07 17:28:35 mail postfix/smtp[31721]: " + msg, time.Date(2026, 12, 7, 17, 28, 35, 0, time.UTC)},
		{"Dec  7 17:28:35 mail postfix/smtp[31721]: " + msg, time.Date(2026, 12, 7, 17, 28, 35, 0, time.UTC)},
		{"2026-12-07T17:28:35.123456+01:00 mail postfix/smtp[31721]: " + msg, time.Date(2026, 12, 7, 16, 28, 35, 123456000, time.UTC)},
		// New Year: a December stamp read in January is last year's.
		{"Dec 31 23:59:59 mail postfix/smtp[31721]: " + msg, time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC)},
	}
	for i, tt := range tests {
		n := now
		if i == 3 {
			n = time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)
		}
		l, ok := ParseSyslog(tt.line, n, time.UTC)
		if !ok {
			t.Errorf("%q: not parsed", tt.line)
			continue
		}
		if !l.Time.Equal(tt.want) || l.Program != "postfix/smtp" || l.PID != 31721 || l.Msg != msg || l.Service() != "smtp" {
			t.Errorf("%q: got %+v", tt.line, l)
		}
	}
	for _, bad := range []string{"", "Dec 07 17:28:35", "Dec 07 17:28:35 mail postfix/smtp: x", "Dec 07 17:28:35 mail postfix/smtp[x]: y", "2026-12-07Tjunk mail a[1]: b", "garbage line here that is long"} {
		if _, ok := ParseSyslog(bad, now, time.UTC); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseJournal(t *testing.T) {
	msg := "Verified TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher X (256/256 bits)"
	rec := `{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1796664515000000","SYSLOG_IDENTIFIER":"postfix/smtp","_PID":"31721","MESSAGE":"` + msg + `"}`
	l, cur, ok, err := ParseJournal([]byte(rec))
	if err != nil || !ok || cur != "s=abc;i=1" || l.PID != 31721 || l.Program != "postfix/smtp" || l.Msg != msg || l.Time.Unix() != 1796664515 {
		t.Fatalf("got %+v %q %v %v", l, cur, ok, err)
	}
	// MESSAGE as bytes (not UTF-8), SYSLOG_PID preferred over _PID.
	rec = `{"__CURSOR":"c2","__REALTIME_TIMESTAMP":"1","SYSLOG_IDENTIFIER":"postfix/smtp","SYSLOG_PID":"5","_PID":"6","MESSAGE":[104,105,255]}`
	l, cur, ok, err = ParseJournal([]byte(rec))
	if err != nil || !ok || cur != "c2" || l.PID != 5 || l.Msg != "hi\xff" {
		t.Fatalf("bytes: got %+v %q %v %v", l, cur, ok, err)
	}
	// Not a Postfix record: no error, the cursor still advances.
	l, cur, ok, err = ParseJournal([]byte(`{"__CURSOR":"c3","MESSAGE":"kernel"}`))
	if err != nil || ok || cur != "c3" {
		t.Fatalf("other: got %+v %q %v %v", l, cur, ok, err)
	}
	if _, _, _, err := ParseJournal([]byte(`{`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		msg  string
		kind Kind
	}{
		{"Anonymous TLS connection established to mx.a.example[2001:db8::1]:25: TLSv1.2 with cipher ADH-AES256-GCM-SHA384 (256/256 bits)", TLSSession},
		{"Bogus TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher X", Malformed},
		{"Verified TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3", Malformed},
		{"Verified TLS connection established to mx.a.example:25: TLSv1.3 with cipher X", Malformed},
		{"certificate verification failed for mx.a.example[192.0.2.1]:25: untrusted issuer /CN=x", VerifyFailed},
		{"certificate verification failed for nowhere", Malformed},
		{"warning: TLS library problem: error:0A000086", Other},
		{"connect to mx.a.example[192.0.2.1]:25: Connection refused", Other},
		{"ABCDE: to=<a@b.example>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to mx.b.example[192.0.2.1]:25: Connection refused)", Status},
		{"ABCDE: to=<a@b.example>, relay=none, delay=1", Other},
		{"AB: to=<a@b.example>, relay=none, status=sent", Other},
		{"ABCDE: TLS is required, but was not offered by host mx.b.example[192.0.2.1]", Other},
	}
	for _, tt := range tests {
		if got := ParseMessage(tt.msg); got.Kind != tt.kind {
			t.Errorf("%q: kind %d, want %d (%+v)", tt.msg, got.Kind, tt.kind, got)
		}
	}
	m := ParseMessage("Anonymous TLS connection established to mx.a.example[2001:db8::1]:25: TLSv1.2 with cipher ADH-AES256-GCM-SHA384 (256/256 bits)")
	if m.Peer != (Endpoint{"mx.a.example", "2001:db8::1", "25"}) || m.Trust != Anonymous || m.Protocol != "TLSv1.2" || m.Cipher != "ADH-AES256-GCM-SHA384" {
		t.Errorf("got %+v", m)
	}
}

func TestClassify(t *testing.T) {
	for text, want := range map[string]Reason{
		"TLS is required, but was not offered by host mx.plain.example[127.0.0.2]": ReasonNotOffered,
		"Server certificate not verified":                                          ReasonNotVerified,
		"Cannot start TLS: handshake failure":                                      ReasonHandshake,
		"TLSA lookup error for mx.example:25":                                      ReasonTLSA,
		"client TLS configuration problem":                                         ReasonPolicyLookup,
		"address resolver failure":                                                 ReasonResolverFailure,
		"connect to mx.b.example[192.0.2.1]:25: Connection refused":                ReasonOther,
	} {
		if got := Classify(text); got != want {
			t.Errorf("%q: %q, want %q", text, got, want)
		}
	}
}

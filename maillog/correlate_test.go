package maillog

import (
	"bufio"
	"os"
	"testing"
	"time"
)

// feedFile runs every line of a recorded maillog through a Correlator.
func feedFile(t *testing.T, path string) (ds []*Delivery, malformed int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	c := NewCorrelator()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l, ok := ParseSyslog(sc.Text(), now, time.UTC)
		if !ok {
			t.Fatalf("unparsed line %q", sc.Text())
		}
		r := c.Feed(l)
		if r.Malformed {
			malformed++
		}
		if r.Delivery != nil {
			ds = append(ds, r.Delivery)
		}
	}
	return ds, malformed
}

// TestCorrelateRecorded checks every delivery of the maillog Postfix 3.7.11
// wrote (testdata/postfix37-maillog-tls.txt): each status line gets its own
// session's TLS line by pid and relay, even where one process delivered to
// two hosts (31721: plain.example in clear, then secure.example over TLS)
// and TLS lines of other processes come between.
func TestCorrelateRecorded(t *testing.T) {
	ds, malformed := feedFile(t, "testdata/postfix37-maillog-tls.txt")
	if malformed != 0 {
		t.Errorf("malformed = %d, want 0", malformed)
	}
	type want struct {
		domain, status, dsn string
		reason              Reason
		trust, proto        string // "" = no TLS
		verify              string
	}
	wants := map[string]want{
		"clear.example":      {"clear.example", "sent", "2.0.0", ReasonNone, "", "", ""},
		"plain.example":      {"plain.example", "deferred", "4.7.4", ReasonNotOffered, "", "", ""},
		"verifyfail.example": {"verifyfail.example", "deferred", "4.7.5", ReasonNotVerified, Untrusted, "TLSv1.3", "self-signed certificate"},
		"secure.example":     {"secure.example", "sent", "2.0.0", ReasonNone, Verified, "TLSv1.3", ""},
		"maytrusted.example": {"maytrusted.example", "sent", "2.0.0", ReasonNone, Trusted, "TLSv1.3", ""},
		"tlsok.example":      {"tlsok.example", "sent", "2.0.0", ReasonNone, Verified, "TLSv1.3", ""},
		"untrusted.example":  {"untrusted.example", "sent", "2.0.0", ReasonNone, Untrusted, "TLSv1.3", ""},
	}
	if len(ds) != len(wants) {
		t.Fatalf("got %d deliveries, want %d", len(ds), len(wants))
	}
	for _, d := range ds {
		w, ok := wants[d.Domain]
		if !ok {
			t.Errorf("unexpected delivery %+v", d)
			continue
		}
		trust, proto := "", ""
		if d.TLS != nil {
			trust, proto = d.TLS.Trust, d.TLS.Protocol
			if d.TLS.Peer != d.Relay {
				t.Errorf("%s: TLS peer %v, relay %v", d.Domain, d.TLS.Peer, d.Relay)
			}
		}
		got := want{d.Domain, d.Status, d.DSN, d.Reason, trust, proto, d.VerifyDetail}
		if got != w {
			t.Errorf("%s:\n got %+v\nwant %+v", d.Domain, got, w)
		}
		if !d.NewSession {
			t.Errorf("%s: NewSession false", d.Domain)
		}
		if d.Reason.TLSPolicy() != (d.Status == "deferred") {
			t.Errorf("%s: TLSPolicy() = %v", d.Domain, d.Reason.TLSPolicy())
		}
	}
	if ds[0].Time != time.Date(2026, 12, 7, 17, 28, 35, 0, time.UTC) {
		t.Errorf("time %v", ds[0].Time)
	}
}

// TestCorrelateSessionReuse: a cached connection carries several messages
// after one TLS line; only the first status line starts a session, and a
// later status line of the same process to another relay has no TLS.
func TestCorrelateSessionReuse(t *testing.T) {
	lines := []string{
		"Dec  7 10:00:00 mail postfix/smtp[7]: Verified TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
		"Dec  7 10:00:01 mail postfix/smtp[7]: AAAAA1: to=<x@a.example>, relay=mx.a.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
		"Dec  7 10:00:02 mail postfix/smtp[7]: AAAAA2: to=<y@A.Example>, relay=mx.a.example[192.0.2.1]:25, conn_use=2, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
		"Dec  7 10:00:03 mail postfix/smtp[7]: AAAAA3: to=<z@b.example>, relay=mx.b.example[192.0.2.2]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
		"Dec  7 10:00:04 mail postfix/smtp[7]: AAAAA4: to=<z@a.example>, relay=mx.a.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
		"Dec  7 10:00:05 mail postfix/qmgr[8]: AAAAA5: to=<q@c.example>, relay=none, delay=0, delays=0/0/0/0, dsn=4.3.0, status=deferred (address resolver failure)",
		"Dec  7 10:00:06 mail postfix/local[9]: AAAAA6: to=<root@mail.example>, relay=local, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)",
		"Dec  7 10:00:07 mail postfix/smtp[7]: Verified TLS connection established to garbage",
	}
	c := NewCorrelator()
	var got []string
	malformed := 0
	for _, s := range lines {
		l, ok := ParseSyslog(s, time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), time.UTC)
		if !ok {
			t.Fatalf("unparsed %q", s)
		}
		r := c.Feed(l)
		if r.Malformed {
			malformed++
		}
		if d := r.Delivery; d != nil {
			tls := "clear"
			if d.TLS != nil {
				tls = d.TLS.Protocol
			}
			got = append(got, d.QueueID+" "+d.Domain+" "+tls+" "+string(d.Reason)+" "+map[bool]string{true: "new", false: "reused"}[d.NewSession])
		}
	}
	want := []string{
		"AAAAA1 a.example TLSv1.2  new",
		"AAAAA2 a.example TLSv1.2  reused",
		"AAAAA3 b.example clear  new",
		"AAAAA4 a.example clear  new",
		"AAAAA5 c.example clear address_resolver_failure new",
	}
	if len(got) != len(want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("delivery %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if malformed != 1 {
		t.Errorf("malformed = %d, want 1", malformed)
	}
}

func TestCorrelateBoundedProcs(t *testing.T) {
	c := NewCorrelator()
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for pid := 1; pid <= 3*maxProcs; pid++ {
		c.Feed(Line{Time: base.Add(time.Duration(pid) * time.Second), Program: "postfix/smtp", PID: pid,
			Msg: "Trusted TLS connection established to mx.a.example[192.0.2.1]:25: TLSv1.3 with cipher X (256/256 bits)"})
	}
	if len(c.procs) > maxProcs {
		t.Fatalf("%d processes kept, cap %d", len(c.procs), maxProcs)
	}
	if c.procs[3*maxProcs] == nil {
		t.Fatal("the newest process was evicted")
	}
}

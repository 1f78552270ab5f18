package mtasts

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
)

type fixture struct {
	dns  *sourcetest.Resolver
	host *sourcetest.PolicyHost
	ca   *probetest.CA
}

// newFixture publishes _mta-sts.sts.test and mta-sts.sts.test → 127.0.0.1,
// where an HTTPS server with a test-CA certificate serves an enforce policy.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dns: sourcetest.NewResolver(t), ca: probetest.NewCA(t)}
	f.host = sourcetest.NewPolicyHost(t, f.ca, "mta-sts.sts.test")
	f.dns.Add(t, `_mta-sts.sts.test. 300 IN TXT "v=STSv1; id=one;"`)
	f.dns.Add(t, "mta-sts.sts.test. 300 IN A 127.0.0.1")
	f.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.sts.test", "*.mx.sts.test"))
	return f
}

func (f *fixture) fetcher(allowPrivate bool) *Fetcher {
	return NewFetcher(FetcherConfig{DNS: &dnsq.Client{Server: f.dns.Addr, Timeout: time.Second},
		RootCAs: f.ca.Pool, Port: f.host.Port, AllowPrivate: allowPrivate})
}

func TestFetch(t *testing.T) {
	f := newFixture(t)
	fe := f.fetcher(true)
	ctx := context.Background()
	id, err := fe.TXT(ctx, "sts.test")
	if err != nil || id != "one" {
		t.Fatalf("TXT = %q, %v", id, err)
	}
	p, err := fe.Fetch(ctx, "sts.test")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 86400 || p.PostfixPolicy() != "secure match=mx.sts.test:.mx.sts.test servername=hostname" {
		t.Fatalf("policy %+v", p)
	}
	if _, err := fe.TXT(ctx, "nosts.test"); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("no TXT: %v, want ErrNoRecord", err)
	}
	f.dns.Fail("_mta-sts.fail.test", dns.TypeTXT, dns.RcodeServerFailure)
	if _, err := fe.TXT(ctx, "fail.test"); !errors.Is(err, dnsq.ErrTemp) || errors.Is(err, ErrNoRecord) {
		t.Fatalf("TXT SERVFAIL: %v, want dnsq.ErrTemp", err)
	}
}

// RFC 8461 §3.3: the fetch fails on redirects, other statuses, a media
// type other than text/plain, an oversized body, a certificate that does
// not validate; the guard refuses private addresses unless allowed.
func TestFetchFailures(t *testing.T) {
	f := newFixture(t)
	fe := f.fetcher(true)
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.sts.test/elsewhere", http.StatusFound)
		}, "not followed"},
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "404"},
		{"content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte(sourcetest.Policy("enforce", 60, "mx.sts.test")))
		}, "content type"},
		{"oversize", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(sourcetest.Policy("enforce", 60, "mx.sts.test") + strings.Repeat("x: y\n", MaxPolicySize/5+1)))
		}, "larger than"},
		{"bad policy", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte("version: STSv1\nmode: enforce\n"))
		}, "max_age"},
	} {
		f.host.SetHandler(c.handler)
		_, err := fe.Fetch(ctx, "sts.test")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one saying %q", c.name, err, c.want)
		}
	}
	f.host.SetHandler(nil)

	// Certificate from a CA the fetcher does not trust.
	other := NewFetcher(FetcherConfig{DNS: &dnsq.Client{Server: f.dns.Addr, Timeout: time.Second},
		RootCAs: probetest.NewCA(t).Pool, Port: f.host.Port, AllowPrivate: true})
	if _, err := other.Fetch(ctx, "sts.test"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v", err)
	}

	// SSRF guard: mta-sts.sts.test resolves to loopback.
	before := f.host.Requests()
	if _, err := f.fetcher(false).Fetch(ctx, "sts.test"); !errors.Is(err, ErrPrivate) {
		t.Errorf("private address without AllowPrivate: %v, want ErrPrivate", err)
	}
	if f.host.Requests() != before {
		t.Errorf("the guard let a request through")
	}

	// No address at all.
	if _, err := fe.Fetch(ctx, "noaddr.test"); err == nil {
		t.Errorf("fetch from a host without address succeeded")
	}
}

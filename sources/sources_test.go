package sources

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

var digest = strings.Repeat("ab", 32)

type env struct {
	dns  *sourcetest.Resolver
	host *sourcetest.PolicyHost
	m    *Manager
}

// newEnv starts a validating resolver and a policy host serving the
// mta-sts.<d> names of domains, and a Manager using both.
func newEnv(t *testing.T, timeout time.Duration, domains ...string) *env {
	t.Helper()
	return newEnvTB(t, timeout, domains...)
}

func newEnvTB(t testing.TB, timeout time.Duration, domains ...string) *env {
	t.Helper()
	ca := probetest.NewCA(t)
	e := &env{dns: sourcetest.NewResolver(t), host: sourcetest.NewPolicyHost(t, ca, sourcetest.PolicyHosts(domains...)...)}
	client := &dnsq.Client{Server: e.dns.Addr, Timeout: 2 * time.Second}
	c, err := srccache.New(srccache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.m, err = New(Config{
		DANE:    &dane.Resolver{DNS: client},
		MTASTS:  mtasts.NewFetcher(mtasts.FetcherConfig{DNS: client, RootCAs: ca.Pool, Port: e.host.Port, AllowPrivate: true}),
		Cache:   c,
		Timeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// sts publishes an MTA-STS TXT record for d (with id) and its policy
// host's address; the host serves policy for every domain unless a
// handler says otherwise.
func (e *env) sts(t *testing.T, d, id string) {
	t.Helper()
	e.dns.Add(t, `_mta-sts.`+d+`. 300 IN TXT "v=STSv1; id=`+id+`"`)
	e.dns.Add(t, "mta-sts."+d+". 300 IN A 127.0.0.1")
}

func (e *env) resolve(t *testing.T, d string) Decision {
	t.Helper()
	dec, err := e.m.Resolve(context.Background(), d)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", d, err)
	}
	return dec
}

// The resolution order: DANE over MTA-STS (RFC 8461 §2); MTA-STS enforce
// answers secure with the policy's mx patterns; testing and none enforce
// nothing.
func TestResolveOrder(t *testing.T) {
	e := newEnv(t, 5*time.Second, "both.test", "sts.test", "testing.test", "none.test")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.example.net", "*.mx.example.net"))
	for _, d := range []string{"both.test", "sts.test"} {
		e.sts(t, d, "1")
	}
	e.dns.Add(t, "both.test. 300 IN MX 10 mx.both.test.")
	e.dns.Add(t, "mx.both.test. 300 IN A 192.0.2.1")
	e.dns.Add(t, "_25._tcp.mx.both.test. 300 IN TLSA 3 1 1 "+digest)
	e.dns.Sign("both.test")

	if d := e.resolve(t, "both.test"); d.Source != SourceDANE || d.Policy != "dane-only" {
		t.Errorf("both.test: %+v, want dane-only from DANE", d)
	}
	d := e.resolve(t, "sts.test")
	if d.Source != SourceMTASTS || d.Policy != "secure match=mx.example.net:.mx.example.net servername=hostname" {
		t.Errorf("sts.test: %+v", d)
	}
	if !strings.Contains(d.Why, "id 1") || !strings.Contains(d.Why, "valid until") || !strings.Contains(d.Why, "*.mx.example.net") {
		t.Errorf("explanation %q lacks the id, expiry or mx patterns", d.Why)
	}
	if d := e.resolve(t, "nothing.test"); d.Source != "" || d.Policy != "" {
		t.Errorf("nothing.test: %+v", d)
	}

	e.host.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		mode := strings.TrimPrefix(strings.Split(r.Host, ".")[1], "")
		_, _ = w.Write([]byte(sourcetest.Policy(mode, 86400, "mx.example.net")))
	})
	e.sts(t, "testing.test", "1")
	e.sts(t, "none.test", "1")
	if d := e.resolve(t, "testing.test"); d.Source != "" || d.Policy != "" || !d.Testing {
		t.Errorf("testing.test: %+v, want not enforced, Testing", d)
	}
	if d := e.resolve(t, "none.test"); d.Source != "" || d.Policy != "" || d.Testing {
		t.Errorf("none.test: %+v", d)
	}
	st := e.m.Stats()
	if st.DANE != 1 || st.MTASTS != 1 || st.MTASTSTesting != 1 || st.None != 2 || st.CacheSize != 10 {
		t.Errorf("stats %+v", st)
	}
}

// N concurrent first lookups of a domain: one TXT query, one HTTPS fetch.
func TestResolveSingleflight(t *testing.T) {
	e := newEnv(t, 5*time.Second, "sf.test")
	e.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx.sf.test"))
	e.sts(t, "sf.test", "1")
	e.dns.Delay(50 * time.Millisecond) // so that the lookups overlap
	var wg sync.WaitGroup
	const n = 50
	errs := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := e.m.Resolve(context.Background(), "sf.test")
			if err != nil || d.Source != SourceMTASTS {
				errs <- d.Source + " " + d.Why
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error("a concurrent lookup got", s)
	}
	if q := e.dns.Count("_mta-sts.sf.test", dns.TypeTXT); q != 1 {
		t.Errorf("%d TXT queries, want 1", q)
	}
	if q := e.dns.Count("sf.test", dns.TypeMX); q != 1 {
		t.Errorf("%d MX queries, want 1", q)
	}
	if r := e.host.Requests(); r != 1 {
		t.Errorf("%d HTTPS fetches, want 1", r)
	}
}

// A first lookup waits at most Timeout and then answers "no policy"
// (RFC 8461: none known); the fetch completes in the background and the
// next lookup uses it without waiting. Lookups of cached domains never
// wait on another domain's first lookup.
func TestResolveTimeout(t *testing.T) {
	e := newEnv(t, 200*time.Millisecond, "slow.test", "fast.test")
	e.sts(t, "slow.test", "1")
	e.sts(t, "fast.test", "1")
	release := make(chan struct{})
	e.host.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Host, "mta-sts.slow.test") {
			<-release
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(sourcetest.Policy("enforce", 86400, "mx.example.net")))
	})
	if d := e.resolve(t, "fast.test"); d.Source != SourceMTASTS {
		t.Fatalf("fast.test: %+v", d)
	}
	start := time.Now()
	if d := e.resolve(t, "slow.test"); d.Source != "" {
		t.Fatalf("slow.test before its fetch ended: %+v", d)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("first lookup took %v with a 200ms bound", el)
	}
	// While slow.test's fetch hangs, fast.test answers at once.
	done := make(chan Decision)
	go func() {
		d, _ := e.m.Resolve(context.Background(), "fast.test")
		done <- d
	}()
	select {
	case d := <-done:
		if d.Source != SourceMTASTS {
			t.Fatalf("fast.test: %+v", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cached lookup waited on another domain's fetch")
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if d := e.resolve(t, "slow.test"); d.Source == SourceMTASTS {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background fetch never filled the cache")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e.m.Stats().Timeouts == 0 {
		t.Error("timeout not counted")
	}
}

// RFC 7672 §2.2: a TLSA SERVFAIL for a signed MX host defers (TEMP), and
// so does a failed re-lookup of a domain known to publish TLSA records.
func TestResolveDANEFailClosed(t *testing.T) {
	e := newEnv(t, 5*time.Second, "unused.test")
	e.dns.Add(t, "d.test. 300 IN MX 10 mx.d.test.")
	e.dns.Add(t, "mx.d.test. 300 IN A 192.0.2.1")
	e.dns.Add(t, "_25._tcp.mx.d.test. 300 IN TLSA 3 1 1 "+digest)
	e.dns.Sign("d.test")
	if d := e.resolve(t, "d.test"); d.Policy != "dane-only" {
		t.Fatalf("d.test: %+v", d)
	}
	// The record expires; the MX lookup now fails: DNSSEC said records
	// exist, so the answer is TEMP, never MTA-STS or nothing.
	r := *e.m.Cache().Get(srccache.KindDANE, "d.test")
	r.Expires = time.Now().Add(-time.Second)
	_ = e.m.Cache().Put(&r)
	e.dns.Fail("d.test", dns.TypeMX, dns.RcodeServerFailure)
	if _, err := e.m.Resolve(context.Background(), "d.test"); !errors.Is(err, ErrTemp) {
		t.Fatalf("re-lookup failing: err %v, want ErrTemp", err)
	}

	e.dns.Add(t, "f.test. 300 IN MX 10 mx.f.test.")
	e.dns.Add(t, "mx.f.test. 300 IN A 192.0.2.1")
	e.dns.Sign("f.test")
	e.dns.Fail("_25._tcp.mx.f.test", dns.TypeTLSA, dns.RcodeServerFailure)
	if _, err := e.m.Resolve(context.Background(), "f.test"); !errors.Is(err, ErrTemp) {
		t.Fatalf("TLSA SERVFAIL: err %v, want ErrTemp", err)
	}
	if e.m.Stats().Temp != 2 {
		t.Errorf("stats %+v", e.m.Stats())
	}
}

// Past sources.timeout, a domain whose last DANE answer found TLSA
// records gets TEMP (records known to exist), never a weaker answer.
func TestResolveTimeoutKnownDANE(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond, "unused.test")
	e.dns.Add(t, "k.test. 300 IN MX 10 mx.k.test.")
	e.dns.Add(t, "mx.k.test. 300 IN A 192.0.2.1")
	e.dns.Add(t, "_25._tcp.mx.k.test. 300 IN TLSA 3 1 1 "+digest)
	e.dns.Sign("k.test")
	if d := e.resolve(t, "k.test"); d.Policy != "dane-only" {
		t.Fatalf("k.test: %+v", d)
	}
	r := *e.m.Cache().Get(srccache.KindDANE, "k.test")
	r.Expires = time.Now().Add(-time.Second)
	_ = e.m.Cache().Put(&r)
	e.dns.Delay(time.Second)
	start := time.Now()
	if _, err := e.m.Resolve(context.Background(), "k.test"); !errors.Is(err, ErrTemp) {
		t.Fatalf("lookup past the bound: err %v, want ErrTemp", err)
	}
	if el := time.Since(start); el > 900*time.Millisecond {
		t.Fatalf("waited %v with a 300ms bound", el)
	}
}

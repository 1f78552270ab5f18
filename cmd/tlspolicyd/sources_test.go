package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/probetest"
	"github.com/tlspolicyd/tlspolicyd/internal/sourcetest"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// sourcesWorld is a validating resolver and an MTA-STS policy host (its
// CA written to a PEM file) for the daemon's DANE and MTA-STS sources.
type sourcesWorld struct {
	dns    *sourcetest.Resolver
	host   *sourcetest.PolicyHost
	caFile string
}

func newSourcesWorld(t *testing.T, domains ...string) *sourcesWorld {
	t.Helper()
	ca := probetest.NewCA(t)
	w := &sourcesWorld{dns: sourcetest.NewResolver(t), host: sourcetest.NewPolicyHost(t, ca, sourcetest.PolicyHosts(domains...)...)}
	w.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(w.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range domains {
		w.dns.Add(t, `_mta-sts.`+d+`. 300 IN TXT "v=STSv1; id=1"`)
		w.dns.Add(t, "mta-sts."+d+". 300 IN A 127.0.0.1")
	}
	return w
}

func (w *sourcesWorld) args(extra ...string) []string {
	return append([]string{"--resolver", w.dns.Addr, "--https-ca", w.caFile, "--mta-sts-port", strconv.Itoa(w.host.Port),
		"--allow-private", "--probe-port", "9"}, extra...)
}

// dialSocketmap connects to a socketmap server, closed at the end of the test.
func dialSocketmap(t *testing.T, addr string) *socketmap.Client {
	t.Helper()
	cl, err := socketmap.Dial(context.Background(), addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func lookup(t *testing.T, cl *socketmap.Client, mapName, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.Lookup(ctx, mapName, key)
	if err != nil {
		t.Fatalf("lookup %s %s: %v", mapName, key, err)
	}
	return strings.TrimSpace(r.Status.String() + " " + r.Data)
}

// TestServeSources: the daemon answers unlisted domains from DANE and
// MTA-STS in the order table, DANE, MTA-STS, default; the table always
// wins; floors raise source answers; DANE records that cannot be read
// defer; cached answers cost no DNS or HTTPS.
func TestServeSources(t *testing.T) {
	w := newSourcesWorld(t, "sts.test", "listed.test", "both.test", "testing.test")
	w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.sts.test", "*.mx.sts.test"))
	digest := strings.Repeat("ab", 32)
	for _, d := range []string{"both.test", "signed.test"} {
		w.dns.Add(t, d+". 300 IN MX 10 mx."+d+".")
		w.dns.Add(t, "mx."+d+". 300 IN A 192.0.2.1")
		w.dns.Add(t, "_25._tcp.mx."+d+". 300 IN TLSA 3 1 1 "+digest)
		w.dns.Sign(d)
	}
	w.dns.Add(t, "broken.test. 300 IN MX 10 mx.broken.test.")
	w.dns.Add(t, "mx.broken.test. 300 IN A 192.0.2.1")
	w.dns.Sign("broken.test")
	w.dns.Fail("_25._tcp.mx.broken.test", dns.TypeTLSA, dns.RcodeServerFailure)

	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("outbound:\n  listed.test: may\n  .parent.test: encrypt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cacheFile := filepath.Join(dir, "sources.json")
	args := w.args("--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--event-log", "", "--sources-cache", cacheFile)
	addrs := startServe(t, []string{"socketmap", "http"}, args...)
	cl := dialSocketmap(t, addrs["socketmap"])
	const sts = "OK secure match=mx1.sts.test:.mx.sts.test servername=hostname"
	for _, c := range []struct{ m, key, want string }{
		{"tls_policy", "sts.test", sts},
		{"tls_policy", "STS.test.", sts},
		{"tls_policy", "listed.test", "OK may"}, // the table wins over MTA-STS
		{"tls_policy", "a.parent.test", "OK encrypt"},
		{"tls_policy", "both.test", "OK dane-only"}, // DANE wins over MTA-STS
		{"tls_policy", "signed.test", "OK dane-only"},
		{"tls_policy", "testing.test", "NOTFOUND"},
		{"tls_policy", "nothing.test", "NOTFOUND"},
		{"tls_policy", "[sts.test]", "NOTFOUND"}, // not a bare domain
		{"tls_policy", ".sts.test", "NOTFOUND"},
		{"tls_policy_secure", "sts.test", sts},
		{"tls_policy_secure", "signed.test", "OK dane-only"},
		{"tls_policy_encrypt", "nothing.test", "OK encrypt"},
		{"tls_transport", "bob@sts.test", "NOTFOUND"},
		{"tls_policy", "broken.test", "TEMP"},
	} {
		if c.key == "testing.test" {
			w.host.SetPolicy(sourcetest.Policy("testing", 86400, "mx1.sts.test"))
		}
		got := lookup(t, cl, c.m, c.key)
		if c.want == "TEMP" {
			got, _, _ = strings.Cut(got, " ")
		}
		if got != c.want {
			t.Errorf("%s %s = %q, want %q", c.m, c.key, got, c.want)
		}
		if c.key == "testing.test" {
			w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.sts.test", "*.mx.sts.test"))
		}
	}
	// Answered from the cache: no further fetch or TXT query.
	fetches, txt := w.host.Requests(), w.dns.Count("_mta-sts.sts.test", dns.TypeTXT)
	for range 20 {
		if got := lookup(t, cl, "tls_policy", "sts.test"); got != sts {
			t.Fatalf("cached: %q", got)
		}
	}
	if w.host.Requests() != fetches || w.dns.Count("_mta-sts.sts.test", dns.TypeTXT) != txt {
		t.Errorf("cached lookups fetched again")
	}

	// /api/table, the status page and /metrics show the sources.
	code, body := get(t, "http://"+addrs["http"]+"/api/table")
	var tv struct {
		Sources []struct {
			Domain, Source, Policy, Mode, ID, Error string
			Temp                                    bool
			MX                                      []string
			Expires                                 time.Time
		}
	}
	if err := json.Unmarshal(body, &tv); err != nil || code != 200 {
		t.Fatalf("/api/table: %d %v", code, err)
	}
	seen := map[string]bool{}
	for _, v := range tv.Sources {
		key := v.Domain + " " + v.Source
		seen[key] = true
		switch key {
		case "sts.test mta-sts":
			if v.Mode != "enforce" || v.ID != "1" || len(v.MX) != 2 || v.Expires.Before(time.Now().Add(23*time.Hour)) {
				t.Errorf("/api/table sts.test: %+v", v)
			}
		case "broken.test dane":
			if !v.Temp || v.Error == "" {
				t.Errorf("/api/table broken.test: %+v", v)
			}
		}
	}
	for _, k := range []string{"sts.test mta-sts", "both.test dane", "broken.test dane", "testing.test mta-sts"} {
		if !seen[k] {
			t.Errorf("/api/table sources lack %s: %s", k, body)
		}
	}
	if seen["nothing.test mta-sts"] {
		t.Errorf("/api/table lists a domain without any policy")
	}
	_, page := get(t, "http://"+addrs["http"]+"/")
	for _, want := range []string{"DANE and MTA-STS", "<code>sts.test</code>", "TEMP: deferred", ">testing<"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	_, metrics := get(t, "http://"+addrs["http"]+"/metrics")
	for _, want := range []string{`tlspolicyd_source_answers_total{answer="mta-sts"} 23`, `tlspolicyd_source_answers_total{answer="dane"} 3`,
		`tlspolicyd_source_answers_total{answer="temp"} 1`, `tlspolicyd_source_fetch_errors_total{source="dane"} 1`, "tlspolicyd_source_cache_records ",
		`tlspolicyd_cache_records{kind="mta-sts"} `, `tlspolicyd_cache_queued{kind="probe"} `, `tlspolicyd_cache_evictions_total{kind="learned"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestServeSourcesCacheRestored: the cache is snapshotted to the probe
// cache file at shutdown and read back at start, so a cached MTA-STS policy stays in
// force (RFC 8461 §5) when its host is unreachable after a restart.
func TestServeSourcesCacheRestored(t *testing.T) {
	w := newSourcesWorld(t, "sts.test")
	w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.sts.test"))
	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("outbound: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	probeCache := filepath.Join(dir, "probes.json")
	args := w.args("--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--probe-cache", probeCache, "--event-log", "")
	const want = "OK secure match=mx1.sts.test servername=hostname"
	t.Run("first", func(t *testing.T) {
		cl := dialSocketmap(t, startServe(t, []string{"socketmap"}, args...)["socketmap"])
		if got := lookup(t, cl, "tls_policy", "sts.test"); got != want {
			t.Fatalf("got %q", got)
		}
	})
	// One file: the probe cache's.
	b, err := os.ReadFile(probeCache)
	if err != nil || !strings.Contains(string(b), `"mx1.sts.test"`) {
		t.Fatalf("snapshot: %v\n%s", err, b)
	}
	// query --explain reads the snapshot: source, id, expiry, mx patterns.
	out, errOut, code := runCLI(t, "query", "--table", table, "--probe-cache", probeCache, "--explain", "sts.test", "other.test")
	for _, want := range []string{"sts.test\tOK secure match=mx1.sts.test servername=hostname",
		"step 4, MTA-STS (from the source cache)", "MTA-STS: policy id 1, mode enforce, mx mx1.sts.test", "valid until", "other.test\tNOTFOUND"} {
		if !strings.Contains(out, want) || code != 0 {
			t.Errorf("query --explain: exit %d, output lacks %q:\n%s%s", code, want, out, errOut)
		}
	}

	w.dns.Remove("_mta-sts.sts.test", dns.TypeTXT)
	w.host.Srv.Close()
	cl := dialSocketmap(t, startServe(t, []string{"socketmap"}, args...)["socketmap"])
	if got := lookup(t, cl, "tls_policy", "sts.test"); got != want {
		t.Fatalf("after restart: %q, want the cached policy", got)
	}
}

// TestProbeShowsSources: probe DOMAIN shows the MTA-STS policy (TXT id,
// mode, max_age, mx patterns, the daemon's answer, MX hosts outside the
// list) and the DANE TLSA records per MX host, authenticated or not.
func TestProbeShowsSources(t *testing.T) {
	w := newSourcesWorld(t, "sts.test")
	w.host.SetPolicy(sourcetest.Policy("enforce", 604800, "mx1.sts.test"))
	w.dns.Add(t, "sts.test. 300 IN MX 10 mx1.sts.test.")
	w.dns.Add(t, "sts.test. 300 IN MX 20 mx2.sts.test.")
	w.dns.Add(t, "mx1.sts.test. 300 IN A 127.0.0.1")
	w.dns.Add(t, "mx2.sts.test. 300 IN A 127.0.0.1")
	w.dns.Add(t, "_25._tcp.mx1.sts.test. 300 IN TLSA 3 1 1 "+strings.Repeat("ab", 32))
	w.dns.Sign("sts.test")
	out, errOut, _ := runCLI(t, append([]string{"probe", "--timeout", "2s"}, append(w.args(), "sts.test")...)...)
	for _, want := range []string{
		"MTA-STS: TXT id 1; policy https://mta-sts.sts.test:" + strconv.Itoa(w.host.Port) + "/.well-known/mta-sts.txt",
		"mode enforce, max_age 604800 (168h0m0s), mx mx1.sts.test",
		"the daemon answers: secure match=mx1.sts.test servername=hostname",
		"MX mx2.sts.test is not in the policy's mx list",
		"DANE: MX records authenticated (DNSSEC); dane: 1 of 2 MX hosts have usable authenticated TLSA records",
		"mx1.sts.test: TLSA authenticated, 1 usable",
		"TLSA 3 1 1 abababababababab… (usable)",
		"mx2.sts.test: no TLSA records (authenticated denial)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q:\n%s%s", want, out, errOut)
		}
	}
	out, _, _ = runCLI(t, append([]string{"probe", "--timeout", "2s", "--json"}, append(w.args(), "sts.test")...)...)
	for _, want := range []string{`"txt_id": "1"`, `"mode": "enforce"`, `"level": "dane"`, `"target": "sts.test"`} {
		if !strings.Contains(out, want) {
			t.Errorf("probe --json lacks %s:\n%s", want, out)
		}
	}
}

// TestSourceEvictedEvent: evicting a policy still in force is an event;
// a record without a policy, or expired, is not.
func TestSourceEvictedEvent(t *testing.T) {
	now := time.Now()
	r := &srccache.Record{Kind: srccache.KindMTASTS, Domain: "sts.test", Answer: "secure match=mx.sts.test servername=hostname", Expires: now.Add(time.Hour)}
	ev, ok := sourceEvictedEvent(r, now)
	if !ok || ev.Kind != events.SourceEvicted || ev.Domain != "sts.test" || ev.Source != "mta-sts" || !strings.Contains(ev.Reason, "before it expired") {
		t.Fatalf("%+v %v", ev, ok)
	}
	if _, ok := sourceEvictedEvent(&srccache.Record{Kind: srccache.KindDANE, Domain: "x.test", Expires: now.Add(time.Hour)}, now); ok {
		t.Error("event for a record without policy")
	}
	r.Expires = now.Add(-time.Second)
	if _, ok := sourceEvictedEvent(r, now); ok {
		t.Error("event for an expired record")
	}
	// A DANE defer (records exist, the lookup failed) has no policy but
	// weakens the answer when dropped: the next lookup may time out and
	// answer without DANE.
	temp := &srccache.Record{Kind: srccache.KindDANE, Domain: "d.test", Temp: true, Expires: now.Add(time.Minute)}
	if ev, ok := sourceEvictedEvent(temp, now); !ok || ev.Rule != "defer" || !strings.Contains(ev.Reason, "DANE defer") {
		t.Errorf("DANE defer evicted: %+v %v", ev, ok)
	}
}

// TestServeSourcesBound: sources.max_records bounds the MTA-STS records;
// a policy in force evicted to make room is a source_evicted event.
func TestServeSourcesBound(t *testing.T) {
	w := newSourcesWorld(t, "a.test", "b.test")
	w.host.SetPolicy(sourcetest.Policy("enforce", 86400, "mx1.a.test"))
	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	if err := os.WriteFile(table, []byte("outbound: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	evlog := filepath.Join(dir, "events.jsonl")
	cl := dialSocketmap(t, startServe(t, []string{"socketmap"}, w.args("--table", table, "--socketmap", "127.0.0.1:0",
		"--policyd", "", "--http", "", "--probe-cache", "", "--event-log", evlog, "--sources-max-records", "1")...)["socketmap"])
	for _, d := range []string{"a.test", "b.test"} {
		if got := lookup(t, cl, "tls_policy", d); !strings.HasPrefix(got, "OK secure") {
			t.Fatalf("%s: %q", d, got)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(evlog)
		if strings.Contains(string(b), `"source_evicted"`) && strings.Contains(string(b), `"a.test"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no source_evicted event for a.test:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const benchEntries = 100_000

// benchTable generates a 100,000-entry table: 50,000 domains
// (d<i>.example), 25,000 .parent entries (.p<i>.example) and 25,000
// [host]:port next hops, with a spread of policies, plus a few recipients.
func benchTable(tb testing.TB) *Table {
	tb.Helper()
	var pols []*Policy
	for _, s := range []string{"encrypt", "verify", "secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", "dane", "may", "encrypt ciphers=high"} {
		p, err := ParsePolicy(s)
		if err != nil {
			tb.Fatal(err)
		}
		pols = append(pols, p)
	}
	t := &Table{Defaults: Defaults{Learn: LearnOff, InboundAction: ActionDefer, LearnMaxAge: DefaultLearnMaxAge}}
	for i := range benchEntries {
		var key string
		switch {
		case i < benchEntries/2:
			key = fmt.Sprintf("d%d.example", i)
		case i < benchEntries*3/4:
			key = fmt.Sprintf(".p%d.example", i)
		default:
			key = fmt.Sprintf("[mx%d.relay.example]:25", i)
		}
		t.Outbound = append(t.Outbound, &Entry{Key: key, Policy: pols[i%len(pols)], Source: Source{"bench.yaml", i + 2}})
	}
	for i := range 1000 {
		t.Recipients = append(t.Recipients, &Entry{Key: fmt.Sprintf("u%d@r.example", i), Policy: pols[0], Source: Source{"bench.yaml", i}})
	}
	return t
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Build(benchTable(b))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchKeys returns n keys made by f, so that lookups spread over the map.
func benchKeys(n int, f func(i int) string) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = f(i)
	}
	return keys
}

func benchResolve(b *testing.B, mapName string, keys []string, wantFound bool) {
	s := benchStore(b)
	for _, k := range keys[:10] {
		if a, err := s.Resolve(mapName, k, nil); err != nil || a.Found != wantFound {
			b.Fatalf("Resolve(%s, %q) = %+v, %v", mapName, k, a, err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		a, _ := s.Resolve(mapName, keys[i%len(keys)], nil)
		if a.Found != wantFound {
			b.Fatal("unexpected answer")
		}
		i++
	}
}

// BenchmarkResolveExact: a key with its own entry (Postfix's first lookup).
func BenchmarkResolveExact(b *testing.B) {
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("d%d.example", i*11) })
	benchResolve(b, MapPolicy, keys, true)
}

// BenchmarkResolveExactUpper: the same with upper-case keys, which must
// be lower-cased (one allocation).
func BenchmarkResolveExactUpper(b *testing.B) {
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("D%d.Example", i*11) })
	benchResolve(b, MapPolicy, keys, true)
}

// BenchmarkResolveParent: a.b.p<i>.example, found after trying
// a.b.p<i>.example and .b.p<i>.example, at .p<i>.example.
func BenchmarkResolveParent(b *testing.B) {
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("a.b.p%d.example", benchEntries/2+i*5) })
	benchResolve(b, MapPolicy, keys, true)
}

// BenchmarkResolveRaised: tls_policy_secure on exact keys (precomputed
// raised answers).
func BenchmarkResolveRaised(b *testing.B) {
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("d%d.example", i*11) })
	benchResolve(b, MapPolicySecure, keys, true)
}

// BenchmarkResolveMiss: an unlisted name four labels deep, no default:
// the exact key and every parent miss.
func BenchmarkResolveMiss(b *testing.B) {
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("mx.x%d.nothing.test", i) })
	benchResolve(b, MapPolicy, keys, false)
}

// BenchmarkResolveTransport: a recipient address matched exactly.
func BenchmarkResolveTransport(b *testing.B) {
	keys := benchKeys(1000, func(i int) string { return fmt.Sprintf("u%d@r.example", i) })
	benchResolve(b, MapTransport, keys, true)
}

// BenchmarkOutboundByKey: the entry of an exact key, read from the
// lookup maps.
func BenchmarkOutboundByKey(b *testing.B) {
	s := benchStore(b)
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("d%d.example", i*11) })
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		e := s.OutboundByKey(keys[i%len(keys)])
		if e == nil {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkBuild: lookup maps for 100,000 entries (the cost of a
// reload after parsing).
func BenchmarkBuild(b *testing.B) {
	t := benchTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(t); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadTable: parsing and validating a 100,000-entry YAML file.
func BenchmarkLoadTable(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("outbound:\n")
	for _, e := range benchTable(b).Outbound {
		fmt.Fprintf(&sb, "  %q: %s\n", e.Key, e.Policy.Text)
	}
	path := filepath.Join(b.TempDir(), "table.yaml")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := LoadTable(path); err != nil {
			b.Fatal(err)
		}
	}
}

// writeBenchDir writes a table directory like tlspolicyd-bench's
// (cmd/tlspolicyd-bench/gen.go): n outbound entries in files of 200,000 —
// 70 % exact keys (one in twenty as [mx.host], [mx.host]:587, host:2526,
// one in fifty in the long form with a note), 30 % .parent keys, eight
// distinct policies — and 1,000 inbound rules in a file of their own.
func writeBenchDir(tb testing.TB, n int) string {
	tb.Helper()
	pols := []string{
		"encrypt", "encrypt protocols=>=TLSv1.2", "verify match=hostname:nexthop",
		"secure match=nexthop:dot-nexthop protocols=>=TLSv1.2", "may", "dane",
		"encrypt ciphers=high protocols=>=TLSv1.2:<=TLSv1.3",
		"fingerprint match=3D:FC:6B:3E:8F:B1:AB:72:06:EC:96:D6:02:44:EE:A8:2F:7E:63:57:4B:A7:C0:B2:3A:3D:31:77:DB:5C:24:44",
	}
	dir := tb.TempDir()
	const perFile = 200_000
	nExact := n - n*3/10
	for part := 0; part*perFile < n; part++ {
		var b strings.Builder
		b.WriteString("outbound:\n")
		for i := part * perFile; i < min((part+1)*perFile, n); i++ {
			if i >= nExact {
				fmt.Fprintf(&b, "  \".p%d.example\": %q\n", i-nExact, pols[(i-nExact+3)%len(pols)])
				continue
			}
			k := fmt.Sprintf("s%d.example", i)
			switch i % 20 {
			case 1:
				k = "[mx." + k + "]"
			case 2:
				k = "[mx." + k + "]:587"
			case 3:
				k += ":2526"
			}
			if i%50 == 7 {
				fmt.Fprintf(&b, "  %q:\n    policy: %q\n    note: contract %d, owner postmaster@ourcorp.example\n", k, pols[i%len(pols)], i)
				continue
			}
			fmt.Fprintf(&b, "  %q: %q\n", k, pols[i%len(pols)])
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("outbound-%02d.yaml", part)), []byte(b.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	var b strings.Builder
	b.WriteString("inbound:\n")
	for j := range 1000 {
		fmt.Fprintf(&b, "  - {name: r%d, from: [i%d.in.example], require: tls, action: defer}\n", j, j)
	}
	if err := os.WriteFile(filepath.Join(dir, "inbound.yaml"), []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// BenchmarkLoadDir: Load (parse, validate, build) of a generated table
// directory of 100,000 and 1,000,000 entries, the daemon's start-up and
// reload. live-MB is the heap the Store keeps (after a collection);
// B/op is everything the load allocates, most of it YAML nodes. Run the
// 1,000,000 case alone with -bench 'LoadDir/entries=1000000' -benchtime 3x.
func BenchmarkLoadDir(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			dir := writeBenchDir(b, n)
			var s *Store
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s = nil // the previous Store is garbage during the next load
				var err error
				if s, err = Load(dir); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(s)
			s = nil
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "live-MB")
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "live-B/entry")
		})
	}
}

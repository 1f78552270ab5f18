package store

import (
	"fmt"
	"os"
	"path/filepath"
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
		e, err := s.OutboundByKey(keys[i%len(keys)])
		if e == nil || err != nil {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkMemdbFirst is an exact lookup through a go-memdb read
// transaction (of the inbound rules, by name, in a table of 100,000
// rules): the reason resolution and OutboundByKey use Go maps instead.
func BenchmarkMemdbFirst(b *testing.B) {
	t := &Table{}
	for i := range benchEntries {
		t.Inbound = append(t.Inbound, &InboundRule{Name: fmt.Sprintf("d%d.example", i), Require: RequireTLS, Action: ActionDefer})
	}
	s, err := Build(t)
	if err != nil {
		b.Fatal(err)
	}
	keys := benchKeys(4096, func(i int) string { return fmt.Sprintf("d%d.example", i*11) })
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		r, err := s.InboundRuleByName(keys[i%len(keys)])
		if r == nil || err != nil {
			b.Fatal("miss")
		}
		i++
	}
}

// BenchmarkBuild: lookup maps and memdb for 100,000 entries (the cost of a
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

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// TestGeneratedTable checks that the generated table parses with
// store.LoadTable and that the answers the benchmark expects — computed by
// the generator from its construction — are the ones the store and the
// engine give, for both table variants. A wrong expectation would make
// the benchmark report errors that are not the daemon's.
func TestGeneratedTable(t *testing.T) {
	for _, variant := range []int{0, 1} {
		spec := tableSpec{Outbound: 2_000, Rules: 200, Variant: variant}
		dir := t.TempDir()
		if err := writeTable(dir, spec); err != nil {
			t.Fatal(err)
		}
		tb, err := store.LoadTable(dir)
		if err != nil {
			t.Fatalf("variant %d: generated table does not load: %v", variant, err)
		}
		if len(tb.Outbound) != spec.Outbound || len(tb.Inbound) != spec.Rules {
			t.Fatalf("variant %d: %d outbound entries and %d rules, want %d and %d",
				variant, len(tb.Outbound), len(tb.Inbound), spec.Outbound, spec.Rules)
		}
		s, err := store.Build(tb)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, l := range genLookups(1, spec, 2_000, "") {
			seen[l.kind]++
			a, err := s.Resolve(store.MapPolicy, l.key, nil)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", l.key, err)
			}
			got := "NOTFOUND "
			if a.Found {
				got = "OK " + a.Data
			}
			want := l.old
			if variant == 1 {
				want = l.new
			}
			if got != want {
				t.Errorf("variant %d, %s lookup %q: store answers %q, benchmark expects %q", variant, l.kind, l.key, got, want)
			}
			if l.old == l.new {
				t.Errorf("%q: old and new answers are both %q; the reload test cannot tell them apart", l.key, l.old)
			}
		}
		for _, k := range []string{kindExact, kindParent, kindMiss} {
			if seen[k] == 0 {
				t.Errorf("no %s lookups in the mix", k)
			}
		}

		if variant == 0 {
			checkPolicyMix(t, s, spec)
		}
	}
}

// checkPolicyMix checks, for -unmet 0, 50 and 100, that every generated
// policy request gets the answer the benchmark expects from the engine,
// and that the share of blocked requests (deferred, rejected or given a
// PREPEND) is the one -unmet promises: none, about 40 %, five in six.
func checkPolicyMix(t *testing.T, s *store.Store, spec tableSpec) {
	t.Helper()
	eng := engine.New(s, nil, nil, nil)
	for _, unmet := range []int{0, defaultUnmet, 100} {
		const n = 1_200
		kinds := map[string]int{}
		for _, pc := range genPolicyCases(1, spec, n, unmet) {
			var req policyd.Request
			if err := policyd.NewDecoder(bufio.NewReader(strings.NewReader(pc.req + "\n"))).Decode(&req); err != nil {
				t.Fatalf("generated request does not decode: %v\n%s", err, pc.req)
			}
			d, err := eng.Evaluate(&req)
			if err != nil {
				t.Fatal(err)
			}
			got := "action=" + d.Action
			kinds[strings.Fields(d.Action)[0]]++
			switch {
			case pc.want != "" && got != pc.want,
				pc.want == "" && (!strings.HasPrefix(got, pc.prefix) || !strings.Contains(got, pc.contains)):
				t.Errorf("-unmet %d: request answered %q, benchmark expects %q / prefix %q containing %q\n%s", unmet, got, pc.want, pc.prefix, pc.contains, pc.req)
			}
		}
		blocked := n - kinds["DUNNO"]
		switch unmet {
		case 0:
			if blocked != 0 {
				t.Errorf("-unmet 0: %d of %d requests blocked, want none: %v", blocked, n, kinds)
			}
		case 100:
			if blocked < n*5/6-60 || blocked > n*5/6+60 {
				t.Errorf("-unmet 100: %d of %d requests blocked, want about five in six: %v", blocked, n, kinds)
			}
		default:
			if blocked < n*35/100 || blocked > n*45/100 {
				t.Errorf("-unmet %d: %d of %d requests blocked, want about 40 %%: %v", unmet, blocked, n, kinds)
			}
			for _, a := range []string{"DUNNO", "450", "550", "PREPEND"} {
				if kinds[a] == 0 {
					t.Errorf("no %s answers among the generated policy requests: %v", a, kinds)
				}
			}
		}
	}
}

// TestTableSplit checks that a table larger than one file is split, with
// the defaults in the first file only, and still loads.
func TestTableSplit(t *testing.T) {
	spec := tableSpec{Outbound: 1_010, Variant: 1, PerFile: 500}
	if n := spec.outboundFiles(); n != 3 {
		t.Fatalf("outboundFiles = %d, want 3", n)
	}
	dir := t.TempDir()
	if err := writeTable(dir, spec); err != nil {
		t.Fatal(err)
	}
	if n := (tableSpec{Outbound: 1_000_000}).outboundFiles(); n != 5 {
		t.Errorf("a 1,000,000-entry table has %d files, want 5 (each under the store's 64 MiB file limit)", n)
	}
	tb, err := store.LoadTable(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Outbound) != spec.Outbound || tb.Defaults.Outbound == nil || tb.Defaults.Outbound.Text != newDefault {
		t.Fatalf("%d entries, defaults.outbound %v; want %d and %q", len(tb.Outbound), tb.Defaults.Outbound, spec.Outbound, newDefault)
	}
}

// BenchmarkLoadGenerated measures what a daemon start or reload costs for
// the benchmark's 100,000-entry table with 10,000 inbound rules: parsing
// and validating (store.LoadTable), building the store (store.Build) and
// the engine's inbound index (engine.Swap). Profile it with
//
//	go test -run '^$' -bench LoadGenerated -cpuprofile cpu.prof -memprofile mem.prof ./cmd/tlspolicyd-bench
func BenchmarkLoadGenerated(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			if err := writeTable(dir, tableSpec{Outbound: n, Rules: 10_000}); err != nil {
				b.Fatal(err)
			}
			eng := engine.New(nil, nil, nil, nil)
			b.ReportAllocs()
			for b.Loop() {
				t, err := store.LoadTable(dir)
				if err != nil {
					b.Fatal(err)
				}
				s, err := store.Build(t)
				if err != nil {
					b.Fatal(err)
				}
				eng.Swap(s)
			}
		})
	}
}

// TestFloorCases checks that bench/floor's steps send the very requests of
// the daemon's steps, each checked against bench/floor's constant answer.
func TestFloorCases(t *testing.T) {
	o, err := parseFlags([]string{"-entries", "1000", "-rules", "100", "-lookups", "200"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := &bench{o: o, out: io.Discard, tableDir: filepath.Join(dir, "table"), cases: filepath.Join(dir, "cases"), start: time.Now()}
	if err := b.generate(); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []lookupCase {
		data, err := os.ReadFile(filepath.Join(b.cases, name))
		if err != nil {
			t.Fatal(err)
		}
		var cs []lookupCase
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var c lookupCase
			if err := json.Unmarshal([]byte(line), &c); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	for _, tc := range []struct{ daemon, floor, want string }{
		{casesMixed, casesFloorSM, floorSMWant},
		{casesPolicy, casesFloorPD, floorPDWant},
	} {
		d, f := read(tc.daemon), read(tc.floor)
		if len(d) != 200 || len(f) != len(d) {
			t.Fatalf("%s: %d cases, %s: %d; want 200 each", tc.daemon, len(d), tc.floor, len(f))
		}
		for i := range d {
			if f[i].Key != d[i].Key || f[i].Req != d[i].Req || f[i].Want != tc.want || f[i].Prefix != "" || f[i].Contains != "" {
				t.Fatalf("%s case %d = %+v, for %+v", tc.floor, i, f[i], d[i])
			}
		}
	}
}

package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dumpTable writes everything a Table holds, policies by value, so that
// two loads can be compared.
func dumpTable(t *Table) string {
	if t == nil {
		return "<nil>"
	}
	var b strings.Builder
	pol := func(p *Policy) string {
		if p == nil {
			return "<nil>"
		}
		return fmt.Sprintf("%v %v %q", p.Level, p.Attrs, p.Text)
	}
	d := t.Defaults
	fmt.Fprintf(&b, "defaults: %s @%s learn=%s %v %s\n", pol(d.Outbound), d.OutboundSource, d.Learn, d.LearnMaxAge, d.InboundAction)
	for i, list := range [][]*Entry{t.Outbound, t.Recipients, t.Senders} {
		for _, e := range list {
			fmt.Fprintf(&b, "%s %q %s testing=%v note=%q review=%v @%s\n", sectionNames[i], e.Key, pol(e.Policy), e.Testing, e.Note, e.ReviewBy, e.Source)
		}
	}
	for _, r := range t.Inbound {
		fmt.Fprintf(&b, "rule %+v\n", *r)
	}
	fmt.Fprintf(&b, "files %v\ndirs %v\n", t.Files, t.Dirs)
	return b.String()
}

// checkParallelLoad loads dir one file at a time and with 4 workers and
// fails unless the tables and the errors (text and order) are identical.
// It returns the sequential result.
func checkParallelLoad(t *testing.T, dir string) (*Table, error) {
	t.Helper()
	seq, seqErr := loadTable(context.Background(), dir, 1)
	par, parErr := loadTable(context.Background(), dir, 4)
	if fmt.Sprint(seqErr) != fmt.Sprint(parErr) {
		t.Errorf("errors differ:\n one by one: %v\n   parallel: %v", seqErr, parErr)
	}
	if a, b := dumpTable(seq), dumpTable(par); a != b {
		t.Errorf("tables differ:\n one by one:\n%s\n   parallel:\n%s", a, b)
	}
	if par != nil {
		// Equal policy texts share one *Policy across files, too.
		seen := map[string]*Policy{}
		for _, e := range append(append(par.Outbound[:len(par.Outbound):len(par.Outbound)], par.Recipients...), par.Senders...) {
			if p, ok := seen[e.Policy.Text]; ok && p != e.Policy {
				t.Errorf("%s @%s: a second *Policy for %q", e.Key, e.Source, e.Policy.Text)
			}
			seen[e.Policy.Text] = e.Policy
		}
	}
	return seq, seqErr
}

// TestLoadTableParallel: parsing the files of a directory in parallel
// gives exactly the table and the errors of parsing them one by one —
// duplicates name the earlier file, errors at the same line keep their
// order, includes and defaults are resolved in file order.
func TestLoadTableParallel(t *testing.T) {
	const rule = "  - {name: %s, from: [%s], require: tls}\n"
	many := map[string]string{"pf/p": "p1.example encrypt\nshared.example verify\n"}
	for i := range 9 {
		var b strings.Builder
		b.WriteString("outbound:\n")
		for j := range 50 {
			fmt.Fprintf(&b, "  k%d.example: %s\n", (i*37+j*11)%200, []string{"encrypt", "verify", "encrypt  ", "secure match=nexthop", "bogus"}[(i+j)%5])
		}
		if i%4 == 1 {
			b.WriteString("include:\n  - postfix: ../pf/p\n")
		}
		fmt.Fprintf(&b, "inbound:\n"+rule+rule, fmt.Sprintf("r%d", i%3), "a.example", fmt.Sprintf("q%d", i), "bad..example")
		many[fmt.Sprintf("many/f%d.yaml", i)] = b.String()
	}
	for name, files := range map[string]map[string]string{
		"cross-file duplicates": {
			"t/a.yaml": "defaults:\n  learn: report\noutbound:\n  x.example: encrypt\n",
			"t/b.yaml": "defaults:\n  learn: enforce\n\noutbound:\n  X.example: verify\ninbound:\n  - name: r\n    from: [a.example]\n    require: tls\n",
			"t/c.yaml": "inbound:\n  - name: r\n    from: [b.example]\n    require: tls\n",
		},
		"errors on one line": {
			"t/a.yaml": "outbound: {a.example: encrypt, a.example: verify, b.example: bogus, \"c@d\": encrypt}\n",
			"t/b.yaml": "outbound: {b.example: encrypt, a.example: may, a.example: none}\nrecipients: {x@y.example: may, x@y.example: encrypt}\n",
			"t/c.yaml": "inbound: [{name: r, from: [a..b], require: tls}, {name: r, require: tls}, {name: r, to: [x@y.example], require: tls}]\n",
			"t/d.yaml": "inbound: [{name: r, from: [a.example], require: nope}]\noutbound: {a.example: [x]}\n",
		},
		"includes": {
			"t/a.yaml": "include:\n  - postfix: ../pf/one\noutbound:\n  one.example: encrypt\n",
			"t/b.yaml": "outbound:\n  two.example: encrypt\ninclude:\n  - postfix: ../pf/two\n  - postfix: ../pf/one\n  - postfix: ../pf/missing\n",
			"t/c.yaml": "include:\n  - postfix: ../pf/two\n",
			"pf/one":   "one.example verify\n[mx.one.example]:25 secure\nbad key here\n",
			"pf/two":   "two.example encrypt\n two continued\n",
		},
		"defaults": {
			"t/a.yaml": "defaults: {learn: bogus, outbound: \"nope\"}\n",
			"t/b.yaml": "defaults: {learn: enforce, outbound: encrypt, learn_max_age: 2h}\n",
			"t/c.yaml": "defaults: {learn_max_age: 1h, inbound_action: reject}\ninbound:\n  - {name: z, from: [z.example], require: tls}\n",
		},
		"syntax errors": {
			"t/a.yaml": "outbound:\n  a.example: encrypt\n",
			"t/b.yaml": "outbound:\n  b.example: [\n",
			"t/c.yaml": "outbound:\n  a.example: verify\n---\nmore: 1\n",
			"t/d.yaml": "outbound:\n  \"[mx.d.example]\": encrypt\n  [mx.e.example]: encrypt\n",
			"t/e.yaml": "outbound:\n  a.example: &x verify\n  f.example: *x\n",
		},
		"valid": {
			"t/a.yaml": "defaults:\n  outbound: may\noutbound:\n  a.example: encrypt\n  .a.example: {policy: verify, testing: true, note: n, review_by: 2030-01-02}\n",
			"t/b.yaml": "recipients:\n  cfo@a.example: verify\nsenders:\n  .a.example: secure\n",
			"t/c.yml":  "inbound:\n  - {name: r1, client: [10.0.0.0/8], require: cert, testing: true, header: X-T}\n",
			"t/d.yaml": "",
		},
		"many files": many,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, files)
			sub := filepath.Join(dir, "t")
			if _, ok := files["many/f0.yaml"]; ok {
				sub = filepath.Join(dir, "many")
			}
			tb, err := checkParallelLoad(t, sub)
			if (name == "valid") != (err == nil) {
				t.Errorf("error %v", err)
			}
			if name == "valid" && (len(tb.Outbound) != 2 || len(tb.Inbound) != 1) {
				t.Errorf("valid table: %s", dumpTable(tb))
			}
			if name == "many files" {
				// Duplicates across files name the earlier file.
				cross := 0
				for _, line := range strings.Split(fmt.Sprint(err), "\n") {
					if !strings.Contains(line, "duplicate") {
						continue
					}
					at, first, _ := strings.Cut(line, "(first at ")
					if at, first = filepath.Base(at[:strings.IndexByte(at, ':')]), filepath.Base(first[:strings.IndexByte(first, ':')]); first > at {
						t.Errorf("a duplicate names a later file: %s", line)
					} else if first < at {
						cross++
					}
				}
				if cross == 0 {
					t.Errorf("no duplicate across files in: %v", err)
				}
			}
		})
	}
}

// FuzzLoadTableParallel: for any split of the input into up to four
// files, parsing them as loadFiles' workers do and replaying the events
// gives what loading them one by one does. (The workers run one after the
// other here: goroutines would make the coverage the fuzzer sees vary
// from run to run, and it would spend its time minimizing.
// TestLoadTableParallel runs them concurrently.)
func FuzzLoadTableParallel(f *testing.F) {
	for _, s := range []string{
		"outbound:\n  a.example: encrypt\n-8<-\noutbound:\n  a.example: verify\n",
		"defaults: {learn: report}\n-8<-\ndefaults: {learn: enforce}\n-8<-\ndefaults: {learn: x}\n",
		"include:\n  - postfix: tls_policy\n-8<-\noutbound:\n  inc.example: may\n-8<-\ninclude:\n  - postfix: tls_policy\n",
		"inbound: [{name: r, from: [a.example], require: tls}]\n-8<-\ninbound: [{name: r, to: [b.example], require: tls1.2}, {name: s}]\n",
		"outbound: {a.example: encrypt, a.example: verify, b.example: bogus}\n-8<-\noutbound: {b.example: dane}\n-8<-\n-8<-\nsenders: [\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		parts := strings.SplitN(in, "-8<-\n", 4)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "tls_policy"), []byte("inc.example encrypt\n[mx.inc.example]:25 verify\n  match=hostname\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		tdir := filepath.Join(dir, "t")
		if err := os.Mkdir(tdir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Includes are relative to the including file: t/../tls_policy.
		for i, p := range parts {
			p = strings.ReplaceAll(p, "postfix: tls_policy", "postfix: ../tls_policy")
			if err := os.WriteFile(filepath.Join(tdir, fmt.Sprintf("f%d.yaml", i)), []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		seq, seqErr := loadTable(context.Background(), tdir, 1)
		p := newParser()
		p.addDir(tdir)
		for i := range parts {
			name := filepath.Join(tdir, fmt.Sprintf("f%d.yaml", i))
			p.replay(name, parseDeferred(name, p.budget))
		}
		par, parErr := p.finish()
		if fmt.Sprint(seqErr) != fmt.Sprint(parErr) {
			t.Errorf("errors differ:\n one by one: %v\n   deferred: %v", seqErr, parErr)
		}
		if a, b := dumpTable(seq), dumpTable(par); a != b {
			t.Errorf("tables differ:\n one by one:\n%s\n   deferred:\n%s", a, b)
		}
	})
}

// TestLoadContextCancelled: a load whose context is done stops before the
// next file and reports the context's error, not a table.
func TestLoadContextCancelled(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"t/a.yaml": "outbound:\n  a.example: encrypt\n",
		"t/b.yaml": "outbound:\n  b.example: encrypt\n",
		"t/c.yaml": "outbound:\n  c.example: encrypt\n",
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, workers := range []int{1, 4} {
		if tb, err := loadTable(ctx, filepath.Join(dir, "t"), workers); !errors.Is(err, context.Canceled) || tb != nil {
			t.Errorf("workers=%d: loadTable = %v, %v; want context.Canceled", workers, tb, err)
		}
	}
	if s, err := LoadContext(ctx, filepath.Join(dir, "t")); !errors.Is(err, context.Canceled) || s != nil {
		t.Errorf("LoadContext = %v, %v; want context.Canceled", s, err)
	}
	if s, err := LoadContext(context.Background(), filepath.Join(dir, "t")); err != nil || len(s.Table().Outbound) != 3 {
		t.Errorf("LoadContext(Background) = %v, %v", s, err)
	}
}

// TestLoadTableIndexSize: loading files in parallel reserves the key
// index for the files still to come (loadFiles, parser.reserve); the index
// it hands to the Store holds every key and is at most twice the size the
// keys need (newKeyIndex), also when a large file without entries follows
// the first one and the reservation overshoots.
func TestLoadTableIndexSize(t *testing.T) {
	outbound := func(part, n int) string {
		var b strings.Builder
		b.WriteString("outbound:\n")
		for i := range n {
			fmt.Fprintf(&b, "  k%d-%d.example: encrypt\n", part, i)
		}
		return b.String()
	}
	for name, files := range map[string]map[string]string{
		"equal files":   {"a.yaml": outbound(0, 2000), "b.yaml": outbound(1, 2000), "c.yaml": outbound(2, 2000), "d.yaml": outbound(3, 2000)},
		"growing files": {"a.yaml": outbound(0, 100), "b.yaml": outbound(1, 1000), "c.yaml": outbound(2, 5000)},
		"then a large file without entries": {"a.yaml": outbound(0, 3000),
			"b.yaml": "# " + strings.Repeat("comment ", 100_000) + "\ninbound: []\n"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			want := 0
			for f, text := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				want += strings.Count(text, ": encrypt")
			}
			tb, err := loadTable(context.Background(), dir, 4)
			if err != nil {
				t.Fatal(err)
			}
			x := &tb.keys.idx[sectionOutbound]
			if len(tb.Outbound) != want || x.n != want {
				t.Fatalf("%d entries, %d indexed; want %d", len(tb.Outbound), x.n, want)
			}
			if len(x.slots) < 2*want || len(x.slots) > 4*want {
				t.Errorf("index of %d slots for %d keys, want %d to %d", len(x.slots), want, 2*want, 4*want)
			}
			for i, e := range tb.Outbound {
				if got := x.find(tb.Outbound, e.Key); got != i {
					t.Fatalf("find(%q) = %d, want %d", e.Key, got, i)
				}
			}
		})
	}
}

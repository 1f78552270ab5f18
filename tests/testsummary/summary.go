package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json), including the
// build events Go 1.24+ adds (build-output, build-fail).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// counts are one package's test results (tests and subtests).
type counts struct {
	passed, failed, skipped int
	// pkgFailed: the package failed as a whole (build error, crash,
	// timeout, TestMain) whether or not a test did.
	pkgFailed bool
}

type summary struct {
	out   io.Writer
	pkgs  map[string]*counts
	buf   map[[2]string][]string // output of a running test
	skips []string               // "pkg TestX: reason"
}

func newSummary(out io.Writer) *summary {
	return &summary{out: out, pkgs: map[string]*counts{}, buf: map[[2]string][]string{}}
}

func (s *summary) pkg(name string) *counts {
	c, ok := s.pkgs[name]
	if !ok {
		c = &counts{}
		s.pkgs[name] = c
	}
	return c
}

// read consumes the stream. A line that is not JSON (go test writes some
// errors before any test runs) is copied to out as is.
func (s *summary) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(s.out, "%s\n", line)
			continue
		}
		s.handle(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test -json: %w", err)
	}
	return nil
}

// verbose reports whether a line exists only because -json implies -v:
// go test without -v does not print it.
func verbose(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- SKIP", "PASS\n"} {
		if strings.HasPrefix(strings.TrimLeft(line, " "), p) {
			return true
		}
	}
	return false
}

func (s *summary) handle(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.out, e.Output)
		return
	case "build-fail":
		return // the package's own "fail" event follows
	}
	if e.Package == "" {
		return
	}
	c := s.pkg(e.Package)
	if e.Test == "" {
		switch e.Action {
		case "output":
			if !verbose(e.Output) {
				fmt.Fprint(s.out, e.Output)
			}
		case "fail":
			c.pkgFailed = true
		}
		return
	}
	key := [2]string{e.Package, e.Test}
	switch e.Action {
	case "output":
		s.buf[key] = append(s.buf[key], e.Output)
	case "pass":
		c.passed++
		delete(s.buf, key)
	case "fail":
		c.failed++
		for _, l := range s.buf[key] {
			if !verbose(l) {
				fmt.Fprint(s.out, l)
			}
		}
		delete(s.buf, key)
	case "skip":
		c.skipped++
		s.skips = append(s.skips, e.Package+" "+e.Test+": "+skipReason(s.buf[key]))
		delete(s.buf, key)
	}
}

// skipReason is what a skipped test logged, on one line.
func skipReason(lines []string) string {
	var parts []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		parts = append(parts, l)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

// report writes the skipped tests and the table.
func (s *summary) report() {
	if len(s.skips) > 0 {
		fmt.Fprintf(s.out, "\n== skipped tests (%d)\n", len(s.skips))
		for _, l := range s.skips {
			fmt.Fprintln(s.out, l)
		}
	}
	fmt.Fprintln(s.out, "\n== test counts per package (tests and subtests)")
	var rows []string
	width := len("total")
	for p, c := range s.pkgs {
		if c.passed+c.failed+c.skipped > 0 || c.pkgFailed { // else: no test files
			rows = append(rows, p)
			width = max(width, len(p))
		}
	}
	slices.Sort(rows)
	line := func(name string, c counts) {
		note := ""
		if c.pkgFailed {
			note = "  FAIL"
		}
		fmt.Fprintf(s.out, "%-*s %6d %7d %8d %7d%s\n", width, name, c.passed+c.failed, c.passed, c.skipped, c.failed, note)
	}
	fmt.Fprintf(s.out, "%-*s %6s %7s %8s %7s\n", width, "package", "run", "passed", "skipped", "failed")
	var total counts
	for _, p := range rows {
		c := s.pkgs[p]
		line(p, *c)
		total.passed += c.passed
		total.failed += c.failed
		total.skipped += c.skipped
		total.pkgFailed = total.pkgFailed || c.pkgFailed
	}
	line("total", total)
}

// failed reports whether a test or a package failed.
func (s *summary) failed() bool {
	for _, c := range s.pkgs {
		if c.failed > 0 || c.pkgFailed {
			return true
		}
	}
	return false
}

// Command testsummary reads `go test -json` on stdin and writes what a
// person needs from it: the output of every failed test (as go test
// prints it without -json), the package lines ("ok", "FAIL", build
// errors), every skipped test with its reason, and at the end one line
// per package with the count of tests run, passed, skipped and failed
// (subtests included). It exits 1 when a test or a package failed, so
// `go test -json ./... | testsummary` under `set -o pipefail` fails as
// go test does. .ci/run uses it.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	s, err := summarize(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if s.failed() {
		os.Exit(1)
	}
}

// summarize copies the readable part of the event stream in to out and
// returns the counts.
func summarize(in io.Reader, out io.Writer) (*summary, error) {
	s := newSummary(out)
	if err := s.read(in); err != nil {
		return s, err
	}
	s.report()
	return s, nil
}

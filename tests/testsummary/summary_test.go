package main

import (
	"os"
	"strings"
	"testing"
)

// testdata/sample.jsonl is `go test -json ./...` (Go 1.26) of a module
// with three packages: a (a passing test that logs, a test with a passing
// and a failing subtest, a skipped test), b (a build error) and c (one
// passing test).
func TestSummarize(t *testing.T) {
	f, err := os.Open("testdata/sample.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	s, err := summarize(f, &out)
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// the failure, as go test prints it
		"    a_test.go:9: the answer was 41, want 42\n--- FAIL: TestFail/bad (0.00s)\n",
		"--- FAIL: TestFail (0.00s)\n",
		"FAIL\texample.com/tsum/a\t",
		// the build error and the package lines
		"b/b_test.go:5:32: undefined: undefined\n",
		"FAIL\texample.com/tsum/b [build failed]\n",
		"ok  \texample.com/tsum/c\t",
		// skips with their reason
		"== skipped tests (1)\nexample.com/tsum/a TestSkip: a_test.go:12: skipping: Postfix not installed\n",
		// the table: run = passed + failed
		"example.com/tsum/a      4       2        1       2  FAIL\n",
		"example.com/tsum/b      0       0        0       0  FAIL\n",
		"example.com/tsum/c      1       1        0       0\n",
		"total                   5       3        1       2  FAIL\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, noise := range []string{"=== RUN", "--- PASS", "quiet log of a passing test"} {
		if strings.Contains(got, noise) {
			t.Errorf("output has %q, which go test without -v does not print:\n%s", noise, got)
		}
	}
	if !s.failed() {
		t.Error("failed() = false for a run with failures")
	}
}

func TestSummarizeGreen(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}
{"Action":"pass","Package":"p"}
not json: copied as is
`
	var out strings.Builder
	s, err := summarize(strings.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	if s.failed() {
		t.Errorf("failed() = true:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "not json: copied as is\n") || strings.Contains(out.String(), "skipped tests") {
		t.Errorf("output:\n%s", out.String())
	}
}

package safetext

import (
	"strings"
	"testing"
)

func TestLineAndText(t *testing.T) {
	for _, tc := range []struct {
		in, line, text string
		max            int
	}{
		{"mx.example.org", "mx.example.org", "mx.example.org", 0},
		{"evil\r\nBcc: v@example.org", "evil? Bcc: v@example.org", "evil?\nBcc: v@example.org", 0},
		{"\x1b[31mred\x1b[0m", "?[31mred?[0m", "?[31mred?[0m", 0},
		{"caf\xc3\xa9 \xff", "café ?", "café ?", 0},
		{"tab\there\x7f\u0085", "tab?here??", "tab?here??", 0},
		{"220 a\n220 b", "220 a 220 b", "220 a\n220 b", 0},
		{strings.Repeat("x", 10), "xxxx…", "xxxx…", 4},
	} {
		if got := Line(tc.in, tc.max); got != tc.line {
			t.Errorf("Line(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.line)
		}
		if got := Text(tc.in, tc.max); got != tc.text {
			t.Errorf("Text(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.text)
		}
	}
}

func TestFirstLine(t *testing.T) {
	if got := FirstLine("one"); got != "one" {
		t.Errorf("FirstLine(one) = %q", got)
	}
	if got := FirstLine("one\ntwo\nthree"); got != "one …" {
		t.Errorf("FirstLine of three lines = %q", got)
	}
}

func TestLineDoesNotCopyCleanText(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Line("mail.bank.example", 128) }); n != 0 {
		t.Errorf("Line of clean text allocates %v times", n)
	}
}

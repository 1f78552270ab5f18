package web

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// shortMax bounds a short reason, in characters.
const shortMax = 90

// where matches the "mx.example[192.0.2.1]:25: " a probe reason starts
// each failure with.
var where = regexp.MustCompile(`^[^\s\[\]]+\[[0-9a-fA-F.:]+\](:\d+)?: `)

// goErrorTail marks where a reason turns into Go's error text (x509,
// crypto/tls, net): the short reason stops before it.
var goErrorTail = []string{": x509: ", ": tls: ", ": remote error: ", ": dial tcp", ": read tcp", ": write tcp", ": lookup ", " (possibly because"}

// shortReason reduces a probe or event reason to what a postmaster reads
// at a glance: the first failure, without the host it concerns (the row
// names the destination), the policy preamble or Go's error detail; the
// page offers the full text next to it.
func shortReason(s string) string {
	for _, pre := range []string{" cannot be met: ", " would defer mail: ", "would fail: ", "not reached (not counted): ", "no MX address reachable: "} {
		if _, after, ok := strings.Cut(s, pre); ok {
			s = after
		}
	}
	if utf8.RuneCountInString(s) > shortMax {
		s, _, _ = strings.Cut(s, "; ") // the first of several failures
	}
	s = where.ReplaceAllString(s, "")
	for _, t := range goErrorTail {
		if i := strings.Index(s, t); i > 0 {
			s = s[:i]
		}
	}
	if utf8.RuneCountInString(s) > shortMax {
		r := []rune(s)
		s = strings.TrimSpace(string(r[:shortMax-1])) + "…"
	}
	return s
}

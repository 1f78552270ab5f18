// Package safetext makes text that came from the network or from files
// (banners, replies, certificate names, table lines, error messages) safe
// to show in logs, events, mail, the status page and terminals: no control
// character (an escape sequence, a bare CR, a forged header line) gets
// through, and its length is bounded.
package safetext

import (
	"strings"
	"unicode/utf8"
)

// Line returns s as one line: a line feed becomes a space, every other
// control character (C0 including CR, DEL, C1) and invalid UTF-8 '?', and
// s is cut to max bytes (0: no cap), "…" marking the cut.
func Line(s string, max int) string { return clean(s, max, false) }

// Text is Line keeping line feeds, for multi-line text such as an SMTP
// banner (a bare CR still becomes '?').
func Text(s string, max int) string { return clean(s, max, true) }

// FirstLine returns s up to its first line feed, " …" marking that more
// followed.
func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func clean(s string, max int, keepNL bool) string {
	ok := max <= 0 || len(s) <= max
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 0x20 && c < 0x7f || c == '\n' && keepNL
	}
	if ok {
		return s // printable ASCII: the common case, no copy
	}
	var b strings.Builder
	for _, r := range s {
		if max > 0 && b.Len() >= max {
			b.WriteString("…")
			break
		}
		switch {
		case r == '\n' && keepNL:
		case r == '\n':
			r = ' '
		case r < 0x20, r >= 0x7f && r < 0xa0, r == utf8.RuneError:
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

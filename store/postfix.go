package store

import (
	"strings"
	"unicode/utf8"
)

// isSpace is Postfix's ISSPACE for the bytes that matter in table files.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// maxIncludeErrors is how many errors an included file may have before
// the rest of it is skipped: a file that is not a tls_policy file (a
// wrong path) is reported in a few lines, not one per line.
const maxIncludeErrors = 5

// parsePostfix parses a Postfix tls_policy source file (the text postmap
// reads, postmap(1) and readlline(3)): "key whitespace value" per logical
// line; a line starting with whitespace continues the previous logical
// line; empty lines, whitespace-only lines and lines whose first
// non-whitespace character is "#" are ignored and do not end a logical
// line. Errors carry the file's own line numbers (the first line of the
// logical line). Where postmap only warns (a continuation with nothing to
// continue, a duplicate key) this is an error.
//
// An included file may be anything readable (a wrong path), and errors
// reach the log, events and the HTTP API: they name the place and the
// kind of error, never the file's content, and stop after
// maxIncludeErrors.
func (p *parser) parsePostfix(file string, data []byte) {
	text := string(data)
	var cur strings.Builder
	curLine := 0
	first := len(p.errs)
	// stop reports whether the file has had its maxIncludeErrors; line is
	// where reading stops.
	stop := func(line int) bool {
		if len(p.errs)-first < maxIncludeErrors {
			return false
		}
		p.errorf(Source{File: file, Line: line}, "stopped reading after %d errors: not a Postfix tls_policy file?", maxIncludeErrors)
		return true
	}
	flush := func() bool {
		if curLine != 0 {
			if stop(curLine) {
				return false
			}
			p.postfixEntry(file, curLine, cur.String())
		}
		cur.Reset()
		curLine = 0
		return true
	}
	for n := 1; len(text) > 0; n++ {
		if curLine == 0 && stop(n) {
			return
		}
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		i := 0
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i == len(line) || line[i] == '#' {
			continue
		}
		if strings.IndexByte(line, 0) >= 0 {
			p.errorf(Source{File: file, Line: n}, "NUL character in line")
			continue
		}
		if !utf8.ValidString(line) {
			p.errorf(Source{File: file, Line: n}, "line is not valid UTF-8")
			continue
		}
		if i > 0 {
			if curLine == 0 {
				p.errorf(Source{File: file, Line: n}, "continuation line (starts with whitespace) without a preceding entry")
				continue
			}
			cur.WriteString(line) // its leading whitespace separates it
			continue
		}
		if !flush() {
			return
		}
		curLine = n
		cur.WriteString(line)
	}
	flush()
}

// postfixEntry parses one logical line "key value" of an included file.
// Its errors carry no part of the line (see parsePostfix).
func (p *parser) postfixEntry(file string, line int, text string) {
	at := Source{File: file, Line: line}
	i := 0
	for i < len(text) && !isSpace(text[i]) {
		i++
	}
	raw, value := text[:i], strings.TrimSpace(text[i:])
	key := NormalizeKey(raw)
	if err := checkOutboundKey(key); err != nil {
		p.errorf(at, "invalid key (want a next hop: domain, .domain, [host] or [host]:port)")
		return
	}
	if value == "" {
		p.errorf(at, "no policy (want \"key  level attr=value …\")")
		return
	}
	pol, err := p.policy(value)
	if err != nil {
		p.errorf(at, "invalid policy: %s", policyErrorKind(err))
		return
	}
	p.add(sectionOutbound, &Entry{Key: key, Policy: pol, Source: at})
}

// policyErrorKind says what is wrong with a policy in words that quote
// none of it: ParsePolicy's messages quote the policy.
func policyErrorKind(err error) string {
	msg := err.Error()
	for _, k := range []struct{ has, kind string }{
		{"does not start with a level", "it does not start with a level (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)"},
		{"unknown level", "unknown level (want none, may, encrypt, dane, dane-only, fingerprint, verify or secure)"},
		{"brace-quoted", "brace-quoted attribute values are not supported"},
		{"malformed attribute", "malformed attribute (want name=value)"},
		{"unknown attribute", "unknown attribute (Postfix 3.7 knows ciphers, exclude, protocols, match, connection_reuse, tafile, servername)"},
		{"is not allowed at level", "an attribute is not allowed at this level"},
		{"more than once", "an attribute is specified more than once"},
		{"level fingerprint requires match=", "level fingerprint requires match= with the certificate or public-key fingerprint(s)"},
	} {
		if strings.Contains(msg, k.has) {
			return k.kind
		}
	}
	for a := range attrBits {
		if strings.HasPrefix(msg, a+"=") || strings.HasPrefix(msg, `attribute "`+a+`"`) {
			return "invalid value of attribute " + a
		}
	}
	return "not a valid Postfix 3.7 policy"
}

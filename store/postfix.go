package store

import (
	"strings"
	"unicode/utf8"
)

// isSpace is Postfix's ISSPACE for the bytes that matter in table files.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// parsePostfix parses a Postfix tls_policy source file (the text postmap
// reads, postmap(1) and readlline(3)): "key whitespace value" per logical
// line; a line starting with whitespace continues the previous logical
// line; empty lines, whitespace-only lines and lines whose first
// non-whitespace character is "#" are ignored and do not end a logical
// line. Errors carry the file's own line numbers (the first line of the
// logical line). Where postmap only warns (a continuation with nothing to
// continue, a duplicate key) this is an error.
func (p *parser) parsePostfix(file string, data []byte) {
	text := string(data)
	var cur strings.Builder
	curLine := 0
	flush := func() {
		if curLine != 0 {
			p.postfixEntry(file, curLine, cur.String())
		}
		cur.Reset()
		curLine = 0
	}
	for n := 1; len(text) > 0; n++ {
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
		flush()
		curLine = n
		cur.WriteString(line)
	}
	flush()
}

// postfixEntry parses one logical line "key value".
func (p *parser) postfixEntry(file string, line int, text string) {
	at := Source{File: file, Line: line}
	i := 0
	for i < len(text) && !isSpace(text[i]) {
		i++
	}
	raw, value := text[:i], strings.TrimSpace(text[i:])
	key := NormalizeKey(raw)
	if err := checkOutboundKey(key); err != nil {
		p.errorf(at, "%v", err)
		return
	}
	if value == "" {
		p.errorf(at, "%s: no policy (want \"key  level attr=value …\")", key)
		return
	}
	pol, err := p.policy(value)
	if err != nil {
		p.errorf(at, "%s: %v", key, err)
		return
	}
	p.add(sectionOutbound, &Entry{Key: key, Policy: pol, Source: at})
}

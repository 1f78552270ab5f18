package store

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

var bracketKeyRE = regexp.MustCompile(`(?m)^[ \t]*\[[^\]\n]*\](:[^ \t\n]*)?:[ \t]`)

// noSpaceAfterColon matches "key:value", a colon a blank should follow.
var noSpaceAfterColon = regexp.MustCompile(`^\s*[^\s:#"'\[{]+:[^\s:]`)

// tabIndentRE matches a line indented with a tab.
var tabIndentRE = regexp.MustCompile(`(?m)^ *\t`)

// yamlError turns a go-yaml error into file:line: message. An unquoted
// "[host]:port" key is the classic mistake in this table (YAML reads "[" as
// the start of a list): the message then says how to write it.
//
// go-yaml gives the line where the construct it was reading began (a
// mapping, often the section's first line), not the line at fault. For
// the two mistakes it can be told from the text, an unquoted "[" key and
// a tab in the indentation, the error names the first such line from
// there on instead; for an unclosed "[" or "{" the line that opens it,
// for a line indented less than its block the line itself.
func (p *parser) yamlError(file string, err error, data []byte) {
	msg := err.Error()
	hint := ""
	var culprit *regexp.Regexp
	if bracketKeyRE.Match(data) {
		hint = ` (keys that start with "[" must be quoted: "[host]:port": policy)`
		culprit = bracketKeyRE
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if strings.Contains(m[2], "tab character") {
			culprit = tabIndentRE
		}
		switch {
		case culprit != nil:
			line = lineOf(data, culprit, line)
		case strings.Contains(m[2], "expected ',' or ']'"), strings.Contains(m[2], "expected ',' or '}'"):
			if l, ok := unclosedLine(data, line); ok {
				line, hint = l, " (a \"[\" or \"{\" on this line is not closed)"
			}
		case strings.Contains(m[2], "could not find expected ':'"):
			if l := lines(data); line <= len(l) && noSpaceAfterColon.MatchString(l[line-1]) {
				hint = ` (write "key: value", with a blank after ":")`
			}
		case strings.Contains(m[2], "did not find expected key"), strings.Contains(m[2], "expected '-' indicator"):
			if l, ok := badIndentLine(data, line); ok {
				line, hint = l, " (this line is indented less than the line before it, but not as deep as any enclosing line)"
			}
		}
		p.errorf(Source{File: file, Line: line}, "YAML syntax: %s%s", m[2], hint)
		return
	}
	p.errorf(Source{File: file}, "YAML syntax: %s%s", strings.TrimPrefix(msg, "yaml: "), hint)
}

// lineOf returns the 1-based number of the first line at or after line
// that re matches, or line if none does.
func lineOf(data []byte, re *regexp.Regexp, line int) int {
	start := 0
	for n := 1; n < line; n++ {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return line
		}
		start += i + 1
	}
	loc := re.FindIndex(data[start:])
	if loc == nil {
		return line
	}
	return line + bytes.Count(data[start:start+loc[0]], []byte{'\n'})
}

// lines returns data's lines.
func lines(data []byte) []string { return strings.Split(string(data), "\n") }

// indentOf returns the number of leading spaces of l, and whether l holds
// anything but blanks and a comment.
func indentOf(l string) (int, bool) {
	t := strings.TrimLeft(l, " ")
	return len(l) - len(t), strings.TrimSpace(t) != "" && !strings.HasPrefix(t, "#")
}

// unclosedLine returns the line, at or after from, of a "[" or "{" that
// is still open when a later line is indented no deeper than the line
// that opened it (or at the end): go-yaml reports the line of the
// enclosing mapping instead. Quoted text and comments are skipped. ok is
// false if there is none.
func unclosedLine(data []byte, from int) (line int, ok bool) {
	type open struct{ line, indent int }
	var stack []open
	for i, l := range lines(data) {
		n := i + 1
		if n < from {
			continue
		}
		indent, content := indentOf(l)
		if !content {
			continue
		}
		if len(stack) > 0 && indent <= stack[0].indent {
			return stack[0].line, true
		}
		var quote byte
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '"' || c == '\'':
				quote = c
			case c == '#' && (j == 0 || l[j-1] == ' '):
				j = len(l)
			case c == '[' || c == '{':
				stack = append(stack, open{n, indent})
			case (c == ']' || c == '}') && len(stack) > 0:
				stack = stack[:len(stack)-1]
			}
		}
	}
	if len(stack) > 0 {
		return stack[0].line, true
	}
	return from, false
}

// badIndentLine returns the first line at or after from that is indented
// less than the line before it but not as deep as any enclosing line (a
// key that matches no block), where go-yaml reports the line before it.
// ok is false if there is none.
func badIndentLine(data []byte, from int) (line int, ok bool) {
	stack := []int{0} // the indentation of each open block
	for i, l := range lines(data) {
		indent, content := indentOf(l)
		if !content {
			continue
		}
		popped := false
		for len(stack) > 1 && indent < stack[len(stack)-1] {
			stack, popped = stack[:len(stack)-1], true
		}
		switch top := stack[len(stack)-1]; {
		case popped && indent != top:
			if i+1 >= from {
				return i + 1, true
			}
			stack = append(stack, indent)
		case indent > top:
			stack = append(stack, indent)
		}
	}
	return from, false
}

package store

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

var yamlLineRE = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

var bracketKeyRE = regexp.MustCompile(`(?m)^[ \t]*\[[^\]\n]*\](:[^ \t\n]*)?:[ \t]`)

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
// there on instead.
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
		if culprit != nil {
			line = lineOf(data, culprit, line)
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

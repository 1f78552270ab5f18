package store

import (
	"strings"
	"testing"
)

// TestYAMLErrorLine: the commonest YAML mistakes are reported at the line
// to fix. go-yaml names the line of the enclosing mapping (one early) for
// an unclosed "[" or "{" and for a line indented less than its block.
func TestYAMLErrorLine(t *testing.T) {
	for _, tc := range []struct{ name, table, want string }{
		{"unclosed [", "outbound:\n  a.example: encrypt\n  b.example: [encrypt\n  c.example: may\n",
			`t.yaml:3: YAML syntax: did not find expected ',' or ']' (a "[" or "{" on this line is not closed)`},
		{"unclosed [ at the end", "outbound:\n  a.example: encrypt\n  b.example: [encrypt\n",
			`t.yaml:3: YAML syntax: did not find expected ',' or ']' (a "[" or "{" on this line is not closed)`},
		{"unclosed { after a multi-line list", "inbound:\n  - name: a\n    from: [a.example,\n      b.example]\n    to: {x\n    require: tls\n",
			`t.yaml:5: YAML syntax: did not find expected ',' or '}' (a "[" or "{" on this line is not closed)`},
		{"indented too little", "outbound:\n  a.example: encrypt\n  b.example: verify\n c.example: may\n",
			"t.yaml:4: YAML syntax: did not find expected key (this line is indented less than the line before it, but not as deep as any enclosing line)"},
		{"rule field indented too little", "inbound:\n  - name: a\n    from: x.example\n   require: tls\n",
			"t.yaml:4: YAML syntax: did not find expected '-' indicator (this line is indented less than the line before it, but not as deep as any enclosing line)"},
		{"indented too much", "outbound:\n  a.example: encrypt\n  b.example: verify\n   c.example: may\n",
			"t.yaml:4: YAML syntax: mapping values are not allowed in this context"},
		{"missing colon", "outbound:\n  a.example: encrypt\n  b.example verify\n  c.example: may\n",
			"t.yaml:3: YAML syntax: could not find expected ':'"},
		{"no blank after the colon", "outbound:\n  a.example: encrypt\n  b.example:verify\n  c.example: may\n",
			`t.yaml:3: YAML syntax: could not find expected ':' (write "key: value", with a blank after ":")`},
	} {
		_, err := ParseFile("t.yaml", strings.NewReader(tc.table))
		if got := errLines(t, err); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: errors %q, want [%q]", tc.name, got, tc.want)
		}
	}
}

package store

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// yamlNodes counts the nodes go-yaml decodes data to (at most two
// documents, as parseYAML decodes), and whether it decoded them all.
func yamlNodes(data []byte) (int, bool) {
	var count func(n *yaml.Node) int
	count = func(n *yaml.Node) int {
		c := 1
		for _, k := range n.Content {
			c += count(k)
		}
		return c
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	total := 0
	for range 2 {
		var n yaml.Node
		err := decode(dec, &n)
		if err == io.EOF {
			return total, true
		}
		if err != nil {
			return 0, false
		}
		total += count(&n)
	}
	return total, true
}

var nodeBoundSeeds = []string{
	"", "a", "a: b\n", "outbound: [a,a,a,a,a]", "{a,b,c,d}", "{a:b,c:d}", "[a: b, c: d]",
	`{"a":b,"c":d}`, `["a":b,"c":d,"e":f]`, `['a' :b,'c' :d]`, "[[a]:b,[c]:d,{e}:f]", "- - - - a", "? a\n? b\n",
	"[? a, ? b, ? c]", "a:\rb:\rc:\r", "a:\u0085b:\u0085", "a:\u2028b:\u2029c:", "---\n---\n", "--- a\n--- b",
	"a: &x b\nc: *x\n", "[*x , *y]", "a: !!str\nb: !t\n", "{a: {b: {c: [d, e]}}}", "- {a,b}\n- {c,d}",
	"outbound:\n  \"[mx.a.example]:25\": \"fingerprint match=AB:CD:EF\"\n", "a: |\n  x\n  y\nb: >\n  z\n",
	"[a,]", "{a,}", "[{},[],{}]", "? [a,b]\n: {c,d}\n", "a:\n- b\n- c\n", "\"a\":b\n\"c\":d",
}

// TestNodeBound: nodeBound is at least the decoded node count of each
// seed, and for tables close to it (so that its cap is about nodes).
func TestNodeBound(t *testing.T) {
	for _, s := range nodeBoundSeeds {
		if n, ok := yamlNodes([]byte(s)); ok && nodeBound([]byte(s)) < n {
			t.Errorf("nodeBound(%q) = %d < %d nodes", s, nodeBound([]byte(s)), n)
		}
	}
}

func FuzzNodeBound(f *testing.F) {
	for _, s := range nodeBoundSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		if n, ok := yamlNodes(data); ok && nodeBound(data) < n {
			t.Errorf("nodeBound(%q) = %d < %d nodes", data, nodeBound(data), n)
		}
	})
}

// TestLoadBudget: a table whose files would decode to more than
// maxLoadNodes nodes is refused before they are decoded (a 16 MB file of
// "[a,a,…]" took 1.7 GB), whether one file, several or an include holds
// them; the error names the table and is the only one.
func TestLoadBudget(t *testing.T) {
	defer func(n int) { maxLoadNodes = n }(maxLoadNodes)
	maxLoadNodes = 1000
	flow := func(n int) string { return "outbound: [" + strings.Repeat("a,", n) + "a]\n" }
	entries := func(from, n int) string {
		var b strings.Builder
		b.WriteString("outbound:\n")
		for i := range n {
			fmt.Fprintf(&b, "  d%d.example: encrypt\n", from+i)
		}
		return b.String()
	}
	tooLarge := "table too large: its files would decode to more than 1000 YAML nodes"
	for _, tc := range []struct {
		name     string
		files    map[string]string
		ok, over bool
	}{
		{"flow list under", map[string]string{"t/a.yaml": flow(400)}, false, false}, // refused for its kind only
		{"flow list over", map[string]string{"t/a.yaml": flow(600)}, false, true},
		{"entries under", map[string]string{"t/a.yaml": entries(0, 240)}, true, false},
		{"files over together", map[string]string{"t/a.yaml": entries(0, 130), "t/b.yaml": entries(1000, 130)}, false, true},
		{"include over", map[string]string{"t/a.yaml": entries(0, 100) + "include:\n  - postfix: ../pf\n",
			"pf": strings.Repeat("x.example encrypt\n", 400)}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			_, err := LoadTable(filepath.Join(dir, "t"))
			got := errLines(t, err)
			over := len(got) == 1 && strings.HasPrefix(got[0], filepath.Join(dir, "t")+": "+tooLarge)
			if (err == nil) != tc.ok || over != tc.over {
				t.Errorf("errors %q, want ok %v, only the table refused as too large %v", got, tc.ok, tc.over)
			}
		})
	}
}

package config

import (
	"bytes"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tlspolicyd/tlspolicyd/internal/duration"
)

// durationKeys returns the dotted YAML keys of the time.Duration fields
// under t ("probe.ttl", …).
func durationKeys(t reflect.Type, prefix string, out map[string]bool) map[string]bool {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		switch {
		case f.Type == reflect.TypeFor[time.Duration]():
			out[prefix+name] = true
		case f.Type.Kind() == reflect.Struct:
			durationKeys(f.Type, prefix+name+".", out)
		}
	}
	return out
}

// withGoDurations returns the file b with every duration value written
// in days ("30d", "1d12h": internal/duration) rewritten as Go writes it
// ("720h0m0s") in place, on the same line, for the YAML decoder, which
// knows Go's syntax only. Anything it cannot parse is left for the
// decoder to report.
func withGoDurations(b []byte) []byte {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return b
	}
	keys := durationKeys(reflect.TypeFor[Config](), "", map[string]bool{})
	lines := bytes.SplitAfter(b, []byte{'\n'})
	changed := false
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			if v.Kind == yaml.MappingNode {
				walk(v, key+".")
				continue
			}
			if !keys[key] || v.Kind != yaml.ScalarNode || !strings.Contains(v.Value, "d") {
				continue
			}
			d, err := duration.Parse(v.Value)
			if err != nil || v.Line < 1 || v.Line > len(lines) {
				continue
			}
			tok := v.Value
			switch v.Style {
			case yaml.DoubleQuotedStyle:
				tok = `"` + tok + `"`
			case yaml.SingleQuotedStyle:
				tok = "'" + tok + "'"
			}
			l, at := lines[v.Line-1], v.Column-1
			if at < 0 || !bytes.HasPrefix(l[min(at, len(l)):], []byte(tok)) {
				continue
			}
			lines[v.Line-1] = append(append(append([]byte{}, l[:at]...), d.String()...), l[at+len(tok):]...)
			changed = true
		}
	}
	walk(doc.Content[0], "")
	if !changed {
		return b
	}
	return bytes.Join(lines, nil)
}

package store

import (
	"bytes"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// decode runs the YAML decoder; a panic inside it (the table is rejected,
// the daemon keeps running) is reported as an error.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

func (p *parser) parseYAML(file string, data []byte) {
	if !p.budget.take(nodeBound(data)) {
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decode(dec, &doc); err != nil {
		if err != io.EOF {
			p.yamlError(file, err, data)
		}
		return
	}
	var extra yaml.Node
	if err := decode(dec, &extra); err != io.EOF {
		if err != nil {
			p.yamlError(file, err, data)
			return
		}
		p.errorf(Source{File: file, Line: extra.Line}, "more than one YAML document (\"---\"): put each in its own file")
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return
	}
	if !p.isKind(file, root, yaml.MappingNode, "the table: want a mapping of sections (defaults, outbound, recipients, senders, inbound, include)") {
		return
	}
	seen := map[string]Source{}
	p.eachField(file, root, seen, "section", func(name string, k, v *yaml.Node) {
		switch name {
		case "defaults":
			if !p.deferSection(evDefaults, v) {
				p.defaults(file, v)
			}
		case "outbound":
			p.entries(file, v, sectionOutbound)
		case "recipients":
			p.entries(file, v, sectionRecipients)
		case "senders":
			p.entries(file, v, sectionSenders)
		case "inbound":
			if !p.deferSection(evInbound, v) {
				p.inbound(file, v)
			}
		case "include":
			if !p.deferSection(evInclude, v) {
				p.include(file, v)
			}
		default:
			p.errorf(src(file, k), "unknown section %q (want defaults, outbound, recipients, senders, inbound, include)", name)
		}
	})
}

// deferSection records a section that depends on other files as an event
// of a deferred parser (loadFiles); it reports whether it did.
func (p *parser) deferSection(kind eventKind, v *yaml.Node) bool {
	if p.deferred {
		p.events = append(p.events, event{kind: kind, node: v})
	}
	return p.deferred
}

func src(file string, n *yaml.Node) Source { return Source{File: file, Line: n.Line} }

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// isKind reports whether n is of kind want; if not it records "what" as
// an error. Aliases are rejected everywhere: expanding them could make a
// small file expensive to load, and a policy table gains nothing by them.
func (p *parser) isKind(file string, n *yaml.Node, want yaml.Kind, what string) bool {
	if n.Kind == yaml.AliasNode {
		p.errorf(src(file, n), "YAML aliases (*%s) are not supported in the policy table", n.Value)
		return false
	}
	if n.Kind != want {
		p.errorf(src(file, n), "%s", what)
		return false
	}
	return true
}

// eachField calls fn for every key/value of mapping m, reporting keys that
// are not strings and keys repeated within m (go-yaml's Node decoding does
// not). kind names the keys in messages ("section", "field").
func (p *parser) eachField(file string, m *yaml.Node, seen map[string]Source, kind string, fn func(name string, k, v *yaml.Node)) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if !p.isKind(file, k, yaml.ScalarNode, kind+" name must be a string") {
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			p.errorf(src(file, k), "YAML merge keys (<<) are not supported in the policy table")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(src(file, k), "duplicate %s %q (first at %s)", kind, k.Value, first)
			continue
		}
		seen[k.Value] = src(file, k)
		fn(k.Value, k, v)
	}
}

// scalar returns the string value of a scalar node, or records an error.
func (p *parser) scalar(file string, n *yaml.Node, what string) (string, bool) {
	if !p.isKind(file, n, yaml.ScalarNode, what+": want a string") {
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(file string, n *yaml.Node, what string) (bool, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "true", "True", "TRUE":
			return true, true
		case "false", "False", "FALSE":
			return false, true
		}
	}
	p.errorf(src(file, n), "%s: want true or false", what)
	return false, false
}

// list returns the scalar items of a sequence (a single scalar counts as a
// one-item list).
func (p *parser) list(file string, v *yaml.Node, label, field string) ([]*yaml.Node, bool) {
	if v.Kind == yaml.ScalarNode && !isNull(v) {
		return []*yaml.Node{v}, true
	}
	if !p.isKind(file, v, yaml.SequenceNode, label+": "+field+": want a list") {
		return nil, false
	}
	if len(v.Content) == 0 {
		p.errorf(src(file, v), "%s: %s: empty list", label, field)
		return nil, false
	}
	ok := true
	for _, it := range v.Content {
		if !p.isKind(file, it, yaml.ScalarNode, label+": "+field+": want a list of strings") || isNull(it) {
			if isNull(it) {
				p.errorf(src(file, it), "%s: %s: empty item", label, field)
			}
			ok = false
		}
	}
	return v.Content, ok
}

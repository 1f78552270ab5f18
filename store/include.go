package store

import (
	"bytes"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

func (p *parser) include(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.SequenceNode, "include: want a list (- postfix: path)") {
		return
	}
	for _, item := range v.Content {
		if !p.isKind(file, item, yaml.MappingNode, "include: want \"- postfix: path\"") {
			continue
		}
		p.eachField(file, item, map[string]Source{}, "field", func(name string, k, val *yaml.Node) {
			if name != "postfix" {
				p.errorf(src(file, k), "unknown include type %q (want postfix: path)", name)
				return
			}
			rel, ok := p.scalar(file, val, "include postfix")
			if !ok {
				return
			}
			if rel == "" || isNull(val) {
				p.errorf(src(file, val), "include postfix: empty path")
				return
			}
			path := rel
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(file), rel)
			}
			abs := absPath(path)
			if first, dup := p.incSeen[abs]; dup {
				p.errorf(src(file, val), "%s is already included (first at %s)", rel, first)
				return
			}
			p.incSeen[abs] = src(file, val)
			p.addFile(path)
			data, err := readRegular(path)
			if err != nil {
				p.errorf(src(file, val), "include %s: %v", rel, err)
				return
			}
			if !p.budget.take(2 * (bytes.Count(data, []byte{'\n'}) + 1)) {
				return
			}
			p.included[path] = true
			p.parsePostfix(path, data)
		})
	}
}

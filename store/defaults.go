package store

import (
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tlspolicyd/tlspolicyd/internal/duration"
)

func (p *parser) defaults(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.MappingNode, "defaults: want a mapping (outbound, learn, learn_max_age, inbound_action, allow_empty)") {
		return
	}
	d := &p.t.Defaults
	p.eachField(file, v, map[string]Source{}, "field", func(name string, k, v *yaml.Node) {
		switch name {
		case "outbound", "learn", "learn_max_age", "inbound_action", "allow_empty":
		default:
			p.errorf(src(file, k), "unknown field %q in defaults (want outbound, learn, learn_max_age, inbound_action, allow_empty)", name)
			return
		}
		if first, dup := p.defSeen[name]; dup {
			p.errorf(src(file, k), "duplicate setting \"defaults.%s\" (first at %s)", name, first)
			return
		}
		p.defSeen[name] = src(file, k)
		if name == "outbound" && isNull(v) {
			d.OutboundSource = src(file, v)
			return
		}
		if name == "allow_empty" {
			d.AllowEmpty, _ = p.boolean(file, v, "defaults.allow_empty")
			return
		}
		s, ok := p.scalar(file, v, "defaults."+name)
		if !ok {
			return
		}
		switch name {
		case "outbound":
			d.OutboundSource = src(file, v)
			if strings.TrimSpace(s) == "" {
				return // NOTFOUND: Postfix's own smtp_tls_security_level applies
			}
			pol, err := ParsePolicy(s)
			if err != nil {
				p.errorf(src(file, v), "defaults.outbound: %v", err)
				return
			}
			d.Outbound = pol
		case "learn":
			switch s {
			case LearnOff, LearnReport, LearnEnforce:
				d.Learn = s
			default:
				p.errorf(src(file, v), "defaults.learn: %q is not off, report or enforce", s)
			}
		case "learn_max_age":
			dur, err := duration.Parse(s)
			if err != nil || dur <= 0 {
				p.errorf(src(file, v), "defaults.learn_max_age: %q is not a positive duration (e.g. 720h or 30d)", s)
				return
			}
			d.LearnMaxAge = dur
		case "inbound_action":
			switch s {
			case ActionDefer, ActionReject:
				d.InboundAction = s
			default:
				p.errorf(src(file, v), "defaults.inbound_action: %q is not defer or reject", s)
			}
		}
	})
}

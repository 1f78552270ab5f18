package store

import (
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// entries parses the outbound, recipients or senders section.
func (p *parser) entries(file string, v *yaml.Node, sec uint8) {
	section := sectionNames[sec]
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.MappingNode, section+": want a mapping of keys to policies") {
		return
	}
	p.reserve(sec, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		if k.Kind == yaml.SequenceNode || k.Kind == yaml.MappingNode {
			p.errorf(src(file, k), "%s: key must be a string; quote keys that start with \"[\" (\"[host]:port\": …)", section)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.scalar(file, k, section+" key") // the error
			continue
		}
		key := NormalizeKey(k.Value)
		var err error
		if sec == sectionOutbound {
			err = checkOutboundKey(key)
		} else {
			err = checkAddressKey(key)
		}
		if err != nil {
			p.errorf(src(file, k), "%v", err)
		}
		e := p.entry(file, sec, key, k, val)
		if err != nil || e == nil {
			continue
		}
		p.add(sec, e)
	}
}

// sectionList returns the list of entries of a section.
func (p *parser) sectionList(sec uint8) *[]*Entry {
	return [...]*[]*Entry{sectionOutbound: &p.t.Outbound, sectionRecipients: &p.t.Recipients, sectionSenders: &p.t.Senders}[sec]
}

// reserve makes room for n more entries of a section, so that appending
// does not copy the list again and again.
func (p *parser) reserve(sec uint8, n int) {
	if p.deferred {
		p.events = slices.Grow(p.events, n)
		return
	}
	list := p.sectionList(sec)
	*list = slices.Grow(*list, n)
	// While loadFiles replays, room for the files still to come too, at
	// the rate of entries per byte so far and an eighth more: the index
	// is then sized once instead of at every file (each resize faults in
	// a new, larger table). An index reserved too large is trimmed at the
	// end.
	ahead := int(float64(len(*list)+n) * p.ahead * 9 / 8)
	p.keys.idx[sec].reserve(len(*list) + n + ahead)
}

// add records e in its section, unless its key is already defined.
func (p *parser) add(sec uint8, e *Entry) {
	if p.deferred {
		p.events = append(p.events, event{kind: evEntry, e: e, section: sec})
		return
	}
	list := p.sectionList(sec)
	*list = append(*list, e)
	if first := p.keys.idx[sec].insert(*list, len(*list)-1); first >= 0 {
		*list = (*list)[:len(*list)-1]
		if p.included[e.Source.File] {
			// An included file's content stays out of errors (parsePostfix).
			p.errorf(e.Source, "duplicate key (first at %s)", (*list)[first].Source)
			return
		}
		p.errorf(e.Source, "duplicate key %q (first at %s)", e.Key, (*list)[first].Source)
		return
	}
	p.keys.sum[sec] = listSum(p.keys.sum[sec], e)
}

// entry parses the value of one entry: a policy string, or the long form
// {policy, testing, note, review_by}.
func (p *parser) entry(file string, sec uint8, key string, k, v *yaml.Node) *Entry {
	section := sectionNames[sec]
	e := &Entry{Key: key, Source: src(file, k)}
	var polNode *yaml.Node
	switch {
	case v.Kind == yaml.AliasNode:
		p.isKind(file, v, yaml.ScalarNode, "")
		return nil
	case isNull(v):
		p.errorf(src(file, v), "%s: no policy", key)
		return nil
	case v.Kind == yaml.ScalarNode:
		polNode = v
	case v.Kind == yaml.MappingNode:
		ok := true
		p.eachField(file, v, map[string]Source{}, "field", func(name string, fk, fv *yaml.Node) {
			switch name {
			case "policy":
				polNode = fv
			case "testing":
				b, good := p.boolean(file, fv, key+": testing")
				e.Testing = b
				ok = ok && good
			case "note":
				s, good := p.scalar(file, fv, key+": note")
				e.Note = s
				ok = ok && good
			case "review_by":
				s, good := p.scalar(file, fv, key+": review_by")
				if !good {
					ok = false
					return
				}
				t, err := time.Parse(time.DateOnly, s)
				if err != nil {
					p.errorf(src(file, fv), "%s: review_by %q is not a date (YYYY-MM-DD)", key, s)
					ok = false
					return
				}
				e.ReviewBy = t
			default:
				p.errorf(src(file, fk), "unknown field %q in %s entry %q (want policy, testing, note, review_by)", name, section, key)
				ok = false
			}
		})
		if polNode == nil {
			p.errorf(src(file, k), "%s: no policy (the long form needs policy: …)", key)
			return nil
		}
		if !ok {
			return nil
		}
	default:
		p.errorf(src(file, v), "%s: want a policy string or a mapping with policy, testing, note, review_by", key)
		return nil
	}
	if isNull(polNode) {
		p.errorf(src(file, polNode), "%s: no policy", key)
		return nil
	}
	if polNode.Kind != yaml.ScalarNode {
		p.scalar(file, polNode, key+": policy") // the error
		return nil
	}
	pol, err := p.policy(polNode.Value)
	if err != nil {
		p.errorf(src(file, polNode), "%s: %v", key, err)
		return nil
	}
	if sec != sectionOutbound {
		if err := checkTransportPolicy(section, pol); err != nil {
			p.errorf(src(file, polNode), "%s: %v", key, err)
			return nil
		}
	}
	e.Policy = pol
	return e
}

// checkTransportPolicy checks a recipients or senders policy: it only
// selects one of the transports tlspolicyd-encrypt:, -verify:, -secure:
// (examples/postfix/master.cf), whose smtp_tls_policy_maps is
// tls_policy_<level>; attributes would be silently lost.
func checkTransportPolicy(section string, pol *Policy) error {
	switch pol.Level {
	case LevelEncrypt, LevelVerify, LevelSecure:
	default:
		return errorf("level %s has no transport: %s entries select the transport tlspolicyd-encrypt:, tlspolicyd-verify: or tlspolicyd-secure:, so the level must be encrypt, verify or secure", pol.Level, section)
	}
	if len(pol.Attrs) > 0 {
		return errorf("attributes are not supported in %s (the entry only selects the transport tlspolicyd-%s:, whose TLS policy comes from map tls_policy_%s): put %s=%s on an outbound entry", section, pol.Level, pol.Level, pol.Attrs[0].Name, pol.Attrs[0].Value)
	}
	return nil
}

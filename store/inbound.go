package store

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Inbound rule actions.
const (
	ActionDefer  = "defer"  // 450 4.7.10
	ActionReject = "reject" // 550 5.7.10
)

// Inbound rule requirements.
const (
	RequireTLS         = "tls"         // encryption_protocol non-empty
	RequireTLS12       = "tls1.2"      // at least TLS 1.2
	RequireTLS13       = "tls1.3"      // at least TLS 1.3
	RequireCert        = "cert"        // a client certificate was presented
	RequireFingerprint = "fingerprint" // the client certificate or key is in Fingerprints
)

// InboundRule is one rule of the inbound section (docs/policy-table.md). List
// entries are normalized: lower-case names and addresses, canonical IP
// addresses and prefixes, fingerprints as upper-case hex with colons (the
// form Postfix sends in ccert_fingerprint). The engine compiles, checks
// and decides them (engine/inbound.go).
type InboundRule struct {
	Name         string
	From         []string // sender address, domain, .domain, or "<>" for the null sender
	To           []string // recipient address, domain or .domain
	Client       []string // IP address, CIDR prefix, host name or .suffix
	Require      string   // RequireTLS, RequireTLS12, RequireTLS13, RequireCert, RequireFingerprint
	Fingerprints []string // with RequireFingerprint only
	Action       string   // ActionDefer or ActionReject (default applied)
	Testing      bool     // never blocks: log, count, alert, optional header
	Header       string   // testing only: header name for PREPEND
	Source       Source
}

func (p *parser) inbound(file string, v *yaml.Node) {
	if isNull(v) {
		return
	}
	if !p.isKind(file, v, yaml.SequenceNode, "inbound: want a list of rules (- name: …)") {
		return
	}
	for _, item := range v.Content {
		if !p.isKind(file, item, yaml.MappingNode, "inbound rule: want a mapping (name, from, to, client, require, fingerprints, action, testing, header)") {
			continue
		}
		p.rule(file, item)
	}
}

func (p *parser) rule(file string, m *yaml.Node) {
	r := &InboundRule{Source: src(file, m)}
	ok := true
	bad := func() { ok = false }
	var nameNode, fpNode, headerNode *yaml.Node
	lbl := ""
	label := func() string { // r.Name is set before the first call and then kept
		if lbl == "" {
			lbl = "inbound rule"
			if r.Name != "" {
				lbl = fmt.Sprintf("inbound rule %q", r.Name)
			}
		}
		return lbl
	}
	// The name first, so that every message can name the rule.
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Kind == yaml.ScalarNode && m.Content[i].Value == "name" {
			nameNode = m.Content[i+1]
			if nameNode.Kind == yaml.ScalarNode && !isNull(nameNode) {
				r.Name = nameNode.Value
			}
			break
		}
	}
	p.eachField(file, m, map[string]Source{}, "field", func(name string, k, v *yaml.Node) {
		switch name {
		case "name":
			s, good := p.scalar(file, v, "inbound rule name")
			if !good {
				bad()
				return
			}
			if strings.TrimSpace(s) == "" || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
				p.errorf(src(file, v), "inbound rule name %q: want a non-empty name without control characters", s)
				bad()
			}
		case "from", "to", "client":
			vals, good := p.list(file, v, label(), name)
			if !good {
				bad()
				return
			}
			for _, vn := range vals {
				norm, err := normalizeSelector(name, vn.Value)
				if err != nil {
					p.errorf(src(file, vn), "%s: %s: %v", label(), name, err)
					bad()
					continue
				}
				switch name {
				case "from":
					r.From = append(r.From, norm)
				case "to":
					r.To = append(r.To, norm)
				default:
					r.Client = append(r.Client, norm)
				}
			}
		case "require":
			s, good := p.scalar(file, v, label()+": require")
			if !good {
				bad()
				return
			}
			switch s {
			case RequireTLS, RequireTLS12, RequireTLS13, RequireCert, RequireFingerprint:
				r.Require = s
			default:
				p.errorf(src(file, v), "%s: require %q is not tls, tls1.2, tls1.3, cert or fingerprint", label(), s)
				bad()
			}
		case "fingerprints":
			fpNode = k
			vals, good := p.list(file, v, label(), name)
			if !good {
				bad()
				return
			}
			for _, vn := range vals {
				fp, err := normalizeFingerprint(vn.Value)
				if err != nil {
					p.errorf(src(file, vn), "%s: fingerprint %q: %v", label(), vn.Value, err)
					bad()
					continue
				}
				r.Fingerprints = append(r.Fingerprints, fp)
			}
		case "action":
			s, good := p.scalar(file, v, label()+": action")
			if !good {
				bad()
				return
			}
			if s != ActionDefer && s != ActionReject {
				p.errorf(src(file, v), "%s: action %q is not defer or reject", label(), s)
				bad()
				return
			}
			r.Action = s
		case "testing":
			b, good := p.boolean(file, v, label()+": testing")
			r.Testing = b
			if !good {
				bad()
			}
		case "header":
			headerNode = k
			s, good := p.scalar(file, v, label()+": header")
			if !good {
				bad()
				return
			}
			if err := checkHeaderName(s); err != nil {
				p.errorf(src(file, v), "%s: header %q: %v", label(), s, err)
				bad()
				return
			}
			r.Header = s
		default:
			p.errorf(src(file, k), "unknown field %q in %s (want name, from, to, client, require, fingerprints, action, testing, header)", name, label())
			bad()
		}
	})
	if nameNode == nil {
		p.errorf(r.Source, "inbound rule has no name")
		return
	}
	if r.Name != "" {
		if first, dup := p.ruleSeen[r.Name]; dup {
			p.errorf(src(file, nameNode), "duplicate inbound rule %q (first at %s)", r.Name, first)
			bad()
		} else {
			p.ruleSeen[r.Name] = src(file, nameNode)
		}
	}
	if !ok {
		return
	}
	if len(r.From) == 0 && len(r.To) == 0 && len(r.Client) == 0 {
		p.errorf(r.Source, "%s has no from, to or client: it would apply to all mail (to require TLS from every client use Postfix's smtpd_tls_security_level instead)", label())
		return
	}
	if r.Require == "" {
		p.errorf(r.Source, "%s has no require (want tls, tls1.2, tls1.3, cert or fingerprint)", label())
		return
	}
	if r.Require == RequireFingerprint && len(r.Fingerprints) == 0 {
		p.errorf(r.Source, "%s: require fingerprint needs fingerprints: [\"AB:CD:…\"]", label())
		return
	}
	if r.Require != RequireFingerprint && fpNode != nil {
		p.errorf(src(file, fpNode), "%s: fingerprints are only used with require: fingerprint", label())
		return
	}
	if r.Header != "" && !r.Testing {
		p.errorf(src(file, headerNode), "%s: header is only used with testing: true", label())
		return
	}
	p.t.Inbound = append(p.t.Inbound, r)
}

// normalizeSelector validates and normalizes one from, to or client item.
func normalizeSelector(field, s string) (string, error) {
	switch field {
	case "from", "to":
		if field == "from" && s == "<>" {
			return s, nil
		}
		k := NormalizeKey(s)
		if err := checkAddressKey(k); err != nil {
			if field == "from" && s == "" {
				return "", errors.New(`empty sender: write "<>" for the null sender`)
			}
			return "", err
		}
		return k, nil
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return "", errorf("%q is not a CIDR prefix", s)
		}
		if pfx != pfx.Masked() {
			return "", errorf("%q has host bits set (did you mean %s?)", s, pfx.Masked())
		}
		if a := pfx.Addr(); a.Is4In6() {
			// Postfix's client_address is matched as IPv4 (an IPv4-mapped
			// address is unmapped), so the prefix must be IPv4 too, or it
			// would never match. Masked and mapped, it is /96 or longer.
			return netip.PrefixFrom(a.Unmap(), pfx.Bits()-96).String(), nil
		}
		return pfx.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "", errorf("%q: IPv6 zones are not supported", s)
		}
		return a.Unmap().String(), nil
	}
	k := NormalizeKey(s)
	if err := checkHostname(strings.TrimPrefix(k, ".")); err != nil {
		return "", errorf("%q is not an IP address, CIDR prefix, host name or .domain: %v", s, err)
	}
	return k, nil
}

// normalizeFingerprint returns fp as Postfix writes ccert_fingerprint:
// upper-case hex, a colon between bytes.
func normalizeFingerprint(fp string) (string, error) {
	if _, err := decodeFingerprint(fp); err != nil {
		return "", err
	}
	hex := strings.ToUpper(strings.ReplaceAll(fp, ":", ""))
	var b strings.Builder
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(hex[i : i+2])
	}
	return b.String(), nil
}

// checkHeaderName validates a header field name (RFC 5322 §3.6.8).
func checkHeaderName(s string) error {
	if s == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return errorf("invalid character %q in a header name", c)
		}
	}
	return nil
}

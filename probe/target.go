package probe

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrBadTarget is wrapped by every error about a malformed target.
var ErrBadTarget = errors.New("bad probe target")

// target is a parsed Postfix next-hop.
type target struct {
	key     string // canonical form: lower case, no trailing dot
	host    string // domain (MX lookup) or host ([host] forms), no brackets
	port    int
	useMX   bool       // bare domain or domain:port
	literal netip.Addr // set when host is an IP address literal ([192.0.2.1])
}

// Canonical returns the canonical cache key of a target: lower case, the
// trailing dot of the host removed. It accepts the Postfix next-hop forms
// "domain", "domain:port", "[host]" and "[host]:port" (host may be an IP
// literal, "[ipv6:2001:db8::1]" or "[2001:db8::1]").
func Canonical(s string) (string, error) {
	t, err := parseTarget(s, 25)
	if err != nil {
		return "", err
	}
	return t.key, nil
}

// parseTarget parses a next-hop; defPort applies when none is given.
func parseTarget(s string, defPort int) (target, error) {
	in := s
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return target{}, fmt.Errorf("%w: empty", ErrBadTarget)
	}
	var t target
	t.port = defPort
	var portStr string
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return target{}, fmt.Errorf("%w: %q: missing ]", ErrBadTarget, in)
		}
		t.host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return target{}, fmt.Errorf("%w: %q: junk after ]", ErrBadTarget, in)
			}
			portStr = rest[1:]
		}
		// Postfix writes IPv6 literals as [ipv6:2001:db8::1].
		lit := strings.TrimPrefix(t.host, "ipv6:")
		if a, err := netip.ParseAddr(lit); err == nil && a.Zone() == "" {
			t.literal = a.Unmap()
			t.host = lit
		} else if strings.Contains(t.host, ":") {
			return target{}, fmt.Errorf("%w: %q: bad IP literal", ErrBadTarget, in)
		} else {
			t.host = strings.TrimSuffix(t.host, ".")
			if err := checkDomain(t.host); err != nil {
				return target{}, fmt.Errorf("%w: %q: %v", ErrBadTarget, in, err)
			}
		}
		t.key = "[" + s[1:end] + "]"
		if t.literal == (netip.Addr{}) {
			t.key = "[" + t.host + "]"
		}
	} else {
		t.useMX = true
		t.host = s
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			t.host, portStr = s[:i], s[i+1:]
		}
		t.host = strings.TrimSuffix(t.host, ".")
		if _, err := netip.ParseAddr(t.host); err == nil {
			return target{}, fmt.Errorf("%w: %q: an IP address must be written in brackets", ErrBadTarget, in)
		}
		if err := checkDomain(t.host); err != nil {
			return target{}, fmt.Errorf("%w: %q: %v", ErrBadTarget, in, err)
		}
		t.key = t.host
	}
	if portStr != "" || strings.HasSuffix(s, ":") {
		p, err := parsePort(portStr)
		if err != nil {
			return target{}, fmt.Errorf("%w: %q: %v", ErrBadTarget, in, err)
		}
		t.port = p
		t.key += ":" + strconv.Itoa(p)
	}
	return t, nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad port %q", s)
		}
	}
	p, _ := strconv.Atoi(s)
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %d out of range", p)
	}
	return p, nil
}

// checkDomain accepts host names as they appear in DNS: labels of letters,
// digits, '-' and '_' (used by some operators), 1–63 bytes, ≤ 253 in all.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty host name")
	}
	if len(d) > 253 {
		return errors.New("host name longer than 253 bytes")
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" {
			return errors.New("empty label in host name")
		}
		if len(l) > 63 {
			return errors.New("label longer than 63 bytes")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid character %q in host name", c)
			}
		}
	}
	return nil
}

// BareDomain returns the canonical form of s if s is a bare domain (no
// [host] form, no port): the key of a learned policy. A domain already in
// canonical form (lower case, no trailing dot) costs no allocation, for
// the learned-policy lookup is on every lookup's path.
func BareDomain(s string) (string, bool) {
	if canonicalDomain(s) {
		return s, true
	}
	t, err := parseTarget(s, DefaultPort)
	if err != nil || !t.useMX || t.key != t.host {
		return "", false
	}
	return t.key, true
}

// canonicalDomain reports whether s is a domain parseTarget would keep as
// it is: checkDomain's rules, checked without allocating, and a character
// other than digits and dots, so that s cannot be an IPv4 address.
func canonicalDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label, name := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z' || c == '-' || c == '_':
			name = true
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0 && name
}

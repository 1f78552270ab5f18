package store

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// NormalizeKey returns key as the table stores and matches it: lower-case,
// one trailing dot removed. Postfix sends the next hop with the case of the
// address (UPPER.Example) and postmap sends keys verbatim.
func NormalizeKey(key string) string {
	key = strings.ToLower(key) // returns key itself when nothing changes
	if n := len(key); n > 0 && key[n-1] == '.' {
		key = key[:n-1]
	}
	return key
}

// checkHostname validates a host or domain name the way Postfix's
// valid_hostname does: labels of letters, digits, '-' and '_' (and, for
// SMTPUTF8 domains, non-ASCII letters and digits), at most 63 bytes each,
// not starting or ending with '-', 255 bytes in all, not all-numeric.
func checkHostname(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > 255 {
		return errors.New("longer than 255 characters")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	numeric := true
	for rest := s; ; {
		label, more, dotted := strings.Cut(rest, ".")
		rest = more
		if label == "" {
			return errors.New("empty label (misplaced \".\")")
		}
		if len(label) > 63 {
			return errorf("label %q is longer than 63 characters", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errorf("label %q starts or ends with \"-\"", label)
		}
		for _, r := range label {
			switch {
			case r >= '0' && r <= '9':
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '-', r == '_':
				numeric = false
			case r > unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)):
				numeric = false
			default:
				return errorf("invalid character %q", r)
			}
		}
		if !dotted {
			break
		}
	}
	if numeric {
		return errors.New("numeric name (write an IP address as [192.0.2.1] or [ipv6:2001:db8::1])")
	}
	return nil
}

// checkPort validates a next-hop port: a number 1-65535 or a service name.
func checkPort(p string) error {
	if p == "" {
		return errors.New("empty port")
	}
	if p[0] >= '0' && p[0] <= '9' {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return errorf("port %q is not a number from 1 to 65535", p)
		}
		return nil
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return errorf("port %q is neither a number nor a service name", p)
		}
	}
	return nil
}

// checkBracketHost validates the inside of "[...]": an IPv4 address,
// "ipv6:" and an IPv6 address (Postfix's syntax), or a host name.
func checkBracketHost(h string) error {
	if v6, ok := strings.CutPrefix(h, "ipv6:"); ok {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return errorf("%q is not an IPv6 address", v6)
		}
		return nil
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Is4() {
			return nil
		}
		return errorf("an IPv6 address is written [ipv6:%s], as Postfix does", h)
	}
	if strings.Contains(h, ":") {
		return errorf("%q is not an IPv4 address or host name (an IPv6 address is written [ipv6:…])", h)
	}
	return checkHostname(h)
}

// checkOutboundKey validates a normalized next-hop key: domain, .domain,
// [host], [host]:port, host:port ([host] may be an address literal).
func checkOutboundKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	if strings.Contains(k, "@") {
		return errorf("invalid key %q: outbound keys are next hops, not addresses (per-address rules go under recipients)", k)
	}
	if strings.ContainsAny(k, " \t\r\n,") {
		return errorf("invalid key %q: keys contain no whitespace or commas", k)
	}
	switch {
	case k[0] == '[':
		end := strings.IndexByte(k, ']')
		if end < 0 {
			return errorf("invalid key %q: missing \"]\"", k)
		}
		if err := checkBracketHost(k[1:end]); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
		rest := k[end+1:]
		if rest == "" {
			return nil
		}
		port, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return errorf("invalid key %q: want [host] or [host]:port", k)
		}
		if err := checkPort(port); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
		return nil
	case k[0] == '.':
		if err := checkHostname(k[1:]); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
		return nil
	}
	host, port, hasPort := strings.Cut(k, ":")
	if err := checkHostname(host); err != nil {
		return errorf("invalid key %q: %v", k, err)
	}
	if hasPort {
		if err := checkPort(port); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
	}
	return nil
}

// checkAddressKey validates a normalized recipients/senders key:
// local@domain, domain or .domain.
func checkAddressKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	if strings.ContainsAny(k, " \t\r\n,<>") {
		return errorf("invalid address %q: want local@domain, domain or .domain", k)
	}
	if k[0] == '.' {
		if err := checkHostname(k[1:]); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
		return nil
	}
	local, domain, isAddr := strings.Cut(k, "@")
	if !isAddr {
		if err := checkHostname(k); err != nil {
			return errorf("invalid key %q: %v", k, err)
		}
		return nil
	}
	if local == "" {
		return errorf("invalid address %q: empty local part (for a whole domain write just the domain)", k)
	}
	if strings.Contains(domain, "@") {
		return errorf("invalid address %q: more than one \"@\"", k)
	}
	if !utf8.ValidString(local) {
		return errorf("invalid address %q: local part is not valid UTF-8", k)
	}
	for _, r := range local {
		if r < ' ' || r == 0x7f {
			return errorf("invalid address %q: control character in local part", k)
		}
	}
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		if err := checkBracketHost(domain[1 : len(domain)-1]); err != nil {
			return errorf("invalid address %q: %v", k, err)
		}
		return nil
	}
	if err := checkHostname(domain); err != nil {
		return errorf("invalid address %q: %v", k, err)
	}
	return nil
}

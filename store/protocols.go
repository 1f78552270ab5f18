package store

import (
	"slices"
	"strconv"
	"strings"
)

// protocolNames are the names protocols= accepts (tls_proto_names);
// versionNames the versions >= and <= name: None, then SSLv3 (0x0300) on.
var protocolNames = [...]string{"SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
var versionNames = []string{"None", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}

// checkProtocols validates a protocols= value as tls_proto_mask_lims does:
// colon-separated tokens NAME, !NAME, >=VERSION or <=VERSION (Postfix ≥ 3.6),
// names case-insensitive, versions also as hex numbers.
func checkProtocols(val string) error {
	for _, tok := range strings.Split(val, ":") {
		if _, ok := parseProtocolToken(tok); !ok {
			return errorf("protocols=%s: unknown protocol %q (want colon-separated SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, each optionally with \"!\", or >=VERSION / <=VERSION, e.g. protocols=>=TLSv1.2)", val, tok)
		}
	}
	return nil
}

// protocolToken is one token of a protocols= value: a bound (">=" or "<="
// and a version number: 0 for None, 0x0300 for SSLv3, 0x0301 for TLSv1,
// …), or a protocol included or excluded ("!"), by index in
// protocolNames.
type protocolToken struct {
	op      byte // '>', '<', '!' (exclude) or 0 (include); 0 with name -1: empty token
	version uint64
	name    int
	// huge: a hex version beyond 31 bits, which the table accepts and
	// ProtocolRange does not interpret.
	huge bool
}

// parseProtocolToken reads one token as tls_proto_mask_lims does; an
// empty token is skipped (ok, name -1).
func parseProtocolToken(tok string) (protocolToken, bool) {
	switch {
	case tok == "":
		return protocolToken{name: -1}, true
	case strings.HasPrefix(tok, ">="), strings.HasPrefix(tok, "<="):
		t := protocolToken{op: tok[0], name: -1}
		v := tok[2:]
		if isHex(v) {
			n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"), 16, 31)
			t.version, t.huge = n, err != nil
			return t, true
		}
		i := slices.IndexFunc(versionNames, func(n string) bool { return strings.EqualFold(n, v) })
		if i < 0 {
			return t, false
		}
		if i > 0 { // versionNames: None, SSLv3 (0x0300), TLSv1 (0x0301), …
			t.version = uint64(0x02ff + i)
		}
		return t, true
	}
	t := protocolToken{}
	name, not := strings.CutPrefix(tok, "!")
	if not {
		t.op = '!'
	}
	t.name = slices.IndexFunc(protocolNames[:], func(n string) bool { return strings.EqualFold(n, name) })
	return t, t.name >= 0
}

// ProtocolRange returns the lowest and highest TLS versions the Postfix SMTP
// client offers under a policy's protocols= value, among TLSv1 to TLSv1.3
// (0 and 0 when it enables none of them). spec is as tls_proto_mask_lims
// (Postfix 3.6 and later) reads it: tokens separated by ':' (or commas and
// spaces in main.cf), each ">=VERSION" or "<=VERSION" (a name, "None" or a
// hex number), "!NAME" to exclude a protocol or "NAME" to include it; when
// any protocol is included, every protocol not included is excluded.
// Names are matched case-insensitively, as the table loader accepts them.
//
// OpenSSL then offers the lowest contiguous run of the versions left
// ("!TLSv1.1" leaves TLSv1 alone, since TLS 1.2 cannot be offered without
// TLS 1.1 when TLSv1 is on): hi is the top of that run. SSLv2 and SSLv3 are
// left out: OpenSSL 1.1 and later disable or lack them, so they count as a
// gap below TLSv1.
func ProtocolRange(spec string) (lo, hi uint16, err error) {
	var floor, ceiling uint64
	var include, exclude [len(protocolNames)]bool
	anyInclude := false
	for _, tok := range strings.FieldsFunc(spec, func(r rune) bool { return strings.ContainsRune(":, \t\r\n", r) }) {
		t, ok := parseProtocolToken(tok)
		switch {
		case !ok:
			return 0, 0, errorf("protocols=%s: unknown protocol %q", spec, tok)
		case t.huge:
			return 0, 0, errorf("protocols=%s: unknown TLS version %q", spec, tok[2:])
		case t.op == '>':
			floor = t.version
		case t.op == '<':
			ceiling = t.version
		case t.op == '!':
			exclude[t.name] = true
		default:
			anyInclude = true
			include[t.name] = true
		}
	}
	const tlsv1 = 2 // index of TLSv1 in protocolNames
	for i := tlsv1; i < len(protocolNames); i++ {
		v := uint16(0x0301 + i - tlsv1)
		on := !exclude[i] && (!anyInclude || include[i]) &&
			(floor == 0 || uint64(v) >= floor) && (ceiling == 0 || uint64(v) <= ceiling)
		switch {
		case on && lo == 0:
			lo, hi = v, v
		case on && hi == v-1:
			hi = v
		case lo != 0:
			return lo, hi, nil
		}
	}
	return lo, hi, nil
}

// isHex reports whether s is a hexadecimal number, "0x" prefix allowed.
func isHex(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

package store

import (
	"errors"
	"strings"
)

// isHexDigit reports whether c is a hexadecimal digit.
func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// checkCertMatch validates match= at verify and secure: colon-separated
// strategies (hostname, nexthop, dot-nexthop) or host names, a leading dot
// matching subdomains. Postfix would accept any string and then simply never
// match it, deferring the mail forever; we reject what cannot be a name.
func checkCertMatch(val string) error {
	n := 0
	for _, tok := range strings.Split(val, ":") {
		if tok == "" {
			continue
		}
		n++
		switch strings.ToLower(tok) {
		case "hostname", "nexthop", "dot-nexthop":
			continue
		}
		name := strings.TrimPrefix(tok, ".")
		if err := checkHostname(name); err != nil {
			return errorf("match=%s: %q is neither hostname, nexthop, dot-nexthop nor a domain name: %v", val, tok, err)
		}
	}
	if n == 0 {
		return errors.New(`attribute "match" has an empty value (want colon-separated strategies or names, e.g. match=nexthop:dot-nexthop)`)
	}
	return nil
}

// checkFingerprints validates match= at fingerprint: "|"-separated digests,
// each hex, optionally colon-separated per byte (tls_dane_add_fpt_digests),
// at most 64 bytes (EVP_MAX_MD_SIZE) and at least 16 (MD5, the shortest
// digest smtp_tls_fingerprint_digest can select).
func checkFingerprints(val string) error {
	n := 0
	for _, fp := range strings.Split(val, "|") {
		if fp == "" {
			continue
		}
		n++
		if _, err := decodeFingerprint(fp); err != nil {
			return errorf("match=%s: fingerprint %q: %v", val, fp, err)
		}
	}
	if n == 0 {
		return errors.New(`attribute "match" has an empty value (want "|"-separated fingerprints)`)
	}
	return nil
}

// decodeFingerprint decodes a hex digest written as "AB:CD:…" or "abcd…"
// and returns its length in bytes.
func decodeFingerprint(fp string) (int, error) {
	n := 0
	for i := 0; i < len(fp); {
		if i+1 >= len(fp) || !isHexDigit(fp[i]) || !isHexDigit(fp[i+1]) {
			return 0, errors.New("want hex digit pairs, optionally separated by \":\"")
		}
		n++
		i += 2
		if i < len(fp) && fp[i] == ':' {
			i++
			if i == len(fp) {
				return 0, errors.New("trailing \":\"")
			}
		}
	}
	if n < 16 || n > 64 {
		return 0, errorf("%d bytes; a digest has 16 (md5) to 64 (sha512) bytes", n)
	}
	return n, nil
}

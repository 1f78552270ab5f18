// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): the _mta-sts TXT record, the policy file fetched
// from https://mta-sts.<domain>/.well-known/mta-sts.txt, and the mapping of
// an enforced policy to a Postfix TLS policy.
package mtasts

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoRecord means the domain publishes no valid STSv1 TXT record.
var ErrNoRecord = errors.New("no MTA-STS TXT record")

// ParseTXT parses one _mta-sts TXT record (its strings joined) and returns
// its id (RFC 8461 §3.1):
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-version     = %s"v=STSv1"
//	sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//	sts-field-delim = *WSP ";" *WSP
//
// Extension fields (name=value) are allowed and ignored.
func ParseTXT(s string) (id string, err error) {
	fields := strings.Split(s, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" || fields[0] != strings.TrimLeft(fields[0], " \t") {
		return "", fmt.Errorf("mta-sts record %q: does not start with v=STSv1", s)
	}
	if len(fields) > 1 && strings.Trim(fields[len(fields)-1], " \t") == "" {
		fields = fields[:len(fields)-1] // the optional trailing delimiter
	}
	seen := map[string]bool{}
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		name, val, ok := strings.Cut(f, "=")
		if !ok || !validFieldName(name) || !validFieldValue(val) {
			return "", fmt.Errorf("mta-sts record %q: bad field %q", s, f)
		}
		if seen[name] {
			return "", fmt.Errorf("mta-sts record %q: field %s repeated", s, name)
		}
		seen[name] = true
		if name == "id" {
			if len(val) < 1 || len(val) > 32 || !isAlnum(val) {
				return "", fmt.Errorf("mta-sts record %q: id %q is not 1-32 letters and digits", s, val)
			}
			id = val
		}
	}
	if id == "" {
		return "", fmt.Errorf("mta-sts record %q: no id", s)
	}
	return id, nil
}

// SelectTXT picks the STSv1 record among a name's TXT records (each given
// as its strings joined): RFC 8461 §3.1 ignores records not starting with
// "v=STSv1" and treats more than one such record as no record at all.
func SelectTXT(records []string) (id string, err error) {
	var found []string
	for _, r := range records {
		if strings.HasPrefix(r, "v=STSv1") {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return "", ErrNoRecord
	case 1:
		id, err := ParseTXT(found[0])
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoRecord, err)
		}
		return id, nil
	}
	return "", fmt.Errorf("%w: %d STSv1 records", ErrNoRecord, len(found))
}

// validFieldName: sts-ext-name = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
func validFieldName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[:1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnumByte(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validFieldValue: sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E), printable
// ASCII except "=" and ";", and no spaces.
func validFieldValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '=' || c == ';' {
			return false
		}
	}
	return true
}

func isAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnumByte(s[i]) {
			return false
		}
	}
	return true
}

func isAlnumByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

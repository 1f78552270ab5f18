package mtasts

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 §3.2).
type Mode string

// Modes.
const (
	ModeEnforce Mode = "enforce"
	ModeTesting Mode = "testing"
	ModeNone    Mode = "none"
)

// MaxAgeLimit is the largest max_age RFC 8461 §3.2 allows (about a year).
const MaxAgeLimit = 31557600

// Policy is a parsed policy file.
type Policy struct {
	Mode   Mode     `json:"mode"`
	MX     []string `json:"mx"`      // patterns as published, lower-cased: host or *.domain
	MaxAge int64    `json:"max_age"` // seconds
}

// MaxAgeDuration returns MaxAge as a duration.
func (p *Policy) MaxAgeDuration() time.Duration { return time.Duration(p.MaxAge) * time.Second }

// ParsePolicy parses a policy file (RFC 8461 §3.2): "key: value" lines
// ending in CRLF or LF; version, mode and max_age are required, mx too
// unless mode is none; unknown keys are ignored (extensions).
func ParsePolicy(b []byte) (*Policy, error) {
	p := &Policy{MaxAge: -1}
	version := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), len(b)+1)
	line := 0
	seen := map[string]bool{}
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" {
			continue
		}
		k, v, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("policy line %d: no \"key: value\"", line)
		}
		k, v = strings.TrimSpace(k), strings.Trim(v, " \t")
		if k != "mx" && seen[k] {
			return nil, fmt.Errorf("policy line %d: %s repeated", line, k)
		}
		seen[k] = true
		switch k {
		case "version":
			version = v
		case "mode":
			switch Mode(v) {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = Mode(v)
			default:
				return nil, fmt.Errorf("policy line %d: unknown mode %q", line, v)
			}
		case "max_age":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > MaxAgeLimit || len(v) > 10 {
				return nil, fmt.Errorf("policy line %d: max_age %q is not 0-%d", line, v, MaxAgeLimit)
			}
			p.MaxAge = n
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(v, "."))
			if err := checkPattern(pat); err != nil {
				return nil, fmt.Errorf("policy line %d: mx %q: %w", line, v, err)
			}
			p.MX = append(p.MX, pat)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	switch {
	case version != "STSv1":
		return nil, fmt.Errorf("policy: version %q, want STSv1", version)
	case p.Mode == "":
		return nil, errors.New("policy: no mode")
	case p.MaxAge < 0:
		return nil, errors.New("policy: no max_age")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, errors.New("policy: no mx")
	}
	return p, nil
}

// checkPattern accepts a host name or "*." followed by one (RFC 8461 §3.2,
// §4.1: the wildcard stands for one leftmost label) that Postfix accepts
// in a match= list, as store.checkHostname checks it: labels of letters,
// digits, '-' and '_', not starting or ending with '-', the name not all
// digits.
func checkPattern(p string) error {
	h := strings.TrimPrefix(p, "*.")
	if h == "" || len(h) > 253 {
		return errors.New("empty or too long")
	}
	numeric := true
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case isAlnumByte(c) || c == '-' || c == '_':
				numeric = false
			default:
				return fmt.Errorf("character %q", c)
			}
		}
	}
	if numeric {
		return errors.New("all-numeric name")
	}
	return nil
}

// Matches reports whether an MX host name fits one of the policy's mx
// patterns (RFC 8461 §4.1: "*.example.com" matches one extra label).
func (p *Policy) Matches(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			if i := strings.IndexByte(host, '.'); i > 0 && host[i+1:] == rest {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// PostfixMatch returns the mx patterns as a Postfix match= value: joined
// by ':', "*.example.net" written ".example.net" (the mapping
// postfix-mta-sts-resolver and postfix-tlspol use; Postfix's ".domain"
// also accepts deeper subdomains, which the certificate check bounds).
func (p *Policy) PostfixMatch() string {
	out := make([]string, len(p.MX))
	for i, m := range p.MX {
		out[i] = strings.TrimPrefix(m, "*")
	}
	return strings.Join(out, ":")
}

// EnforcedPostfixPolicy returns what PostfixPolicy would be in mode
// enforce: for a testing policy, what enforcing it would ask of Postfix.
func (p *Policy) EnforcedPostfixPolicy() string {
	q := *p
	q.Mode = ModeEnforce
	return q.PostfixPolicy()
}

// PostfixPolicy returns the Postfix TLS policy an enforced policy asks
// for: "secure match=<patterns> servername=hostname". It is "" for the
// testing and none modes, which enforce nothing.
func (p *Policy) PostfixPolicy() string {
	if p.Mode != ModeEnforce || len(p.MX) == 0 {
		return ""
	}
	return "secure match=" + p.PostfixMatch() + " servername=hostname"
}

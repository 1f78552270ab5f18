// Package tlsrpt writes SMTP TLS Reporting aggregate reports (RFC 8460)
// from what Postfix logged (package outbound): for each destination domain
// that publishes a "v=TLSRPTv1; rua=…" TXT record at _smtp._tls.<domain>,
// one JSON report a UTC day, gzipped, mailed to its mailto: rua through a
// relay (§5.3: multipart/report, application/tlsrpt+gzip) or POSTed to its
// https: rua (§5.4).
package tlsrpt

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
)

// ErrNoRecord means the domain publishes no usable TLSRPTv1 record.
var ErrNoRecord = errors.New("no TLSRPTv1 record")

// ParseRecord parses one _smtp._tls TXT record (its strings joined) and
// returns its rua URIs (RFC 8460 §3):
//
//	tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//	tlsrpt-version = %s"v=TLSRPTv1"
//	tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//
// Only mailto: and https: URIs are kept; other extension fields are ignored.
func ParseRecord(s string) ([]string, error) {
	fields := strings.Split(s, ";")
	if strings.TrimSpace(fields[0]) != "v=TLSRPTv1" {
		return nil, fmt.Errorf("tlsrpt record %q: does not start with v=TLSRPTv1", s)
	}
	var ruas []string
	seen := false
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("tlsrpt record %q: bad field %q", s, f)
		}
		if name != "rua" {
			continue
		}
		if seen {
			return nil, fmt.Errorf("tlsrpt record %q: rua repeated", s)
		}
		seen = true
		for _, u := range strings.Split(val, ",") {
			u = strings.Trim(u, " \t")
			p, err := url.Parse(u)
			if err != nil {
				return nil, fmt.Errorf("tlsrpt record %q: rua %q: %w", s, u, err)
			}
			switch strings.ToLower(p.Scheme) {
			case "mailto":
				if !strings.Contains(p.Opaque, "@") {
					return nil, fmt.Errorf("tlsrpt record %q: rua %q: no address", s, u)
				}
				ruas = append(ruas, u)
			case "https":
				if p.Host == "" {
					return nil, fmt.Errorf("tlsrpt record %q: rua %q: no host", s, u)
				}
				ruas = append(ruas, u)
			}
		}
	}
	if len(ruas) == 0 {
		return nil, fmt.Errorf("tlsrpt record %q: no mailto: or https: rua", s)
	}
	return ruas, nil
}

// SelectRecord picks the TLSRPTv1 record among a name's TXT records: those
// not starting with "v=TLSRPTv1" are discarded, and unless exactly one is
// left the domain does not implement TLS-RPT (RFC 8460 §3).
func SelectRecord(records []string) ([]string, error) {
	var found []string
	for _, r := range records {
		if strings.HasPrefix(r, "v=TLSRPTv1") {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%w (%d records)", ErrNoRecord, len(found))
	}
	return ParseRecord(found[0])
}

// Lookup returns the rua URIs domain publishes at _smtp._tls.<domain>.
// ErrNoRecord: none; another error: the lookup failed (try again later).
func Lookup(ctx context.Context, c *dnsq.Client, domain string) ([]string, error) {
	ans, err := c.Query(ctx, "_smtp._tls."+domain, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var recs []string
	for _, rr := range ans.RRs {
		if t, ok := rr.(*dns.TXT); ok {
			recs = append(recs, strings.Join(t.Txt, ""))
		}
	}
	return SelectRecord(recs)
}

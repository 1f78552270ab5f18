// Package dnsq asks one recursive, DNSSEC-validating name server and
// reports whether it vouched for the answer (the AD bit, RFC 4035 §3.2.3;
// RFC 6840 §5.7), as the Postfix SMTP client trusts its resolver's AD bit
// with smtp_dns_support_level = dnssec. DANE (RFC 7672) and MTA-STS
// (RFC 8461) lookups use it; nothing here validates signatures itself.
package dnsq

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// ErrTemp marks a lookup that failed without an answer (timeout, SERVFAIL,
// REFUSED, …): it says nothing about whether records exist.
var ErrTemp = errors.New("temporary DNS failure")

// Client queries Server (host:port) over UDP, retrying once, and over TCP
// when the reply is truncated.
type Client struct {
	Server  string
	Timeout time.Duration // per exchange; 0 means 5 s
}

// Answer is a reply with NOERROR or NXDOMAIN.
type Answer struct {
	RRs      []dns.RR // answer section; empty for NODATA and NXDOMAIN
	NXDOMAIN bool
	AD       bool // the resolver validated the answer (or the denial)
}

// Query asks for name's qtype records with the DO and AD bits set, so a
// validating resolver says whether the answer is authenticated. Any rcode
// other than NOERROR and NXDOMAIN, and any transport failure, is an error
// wrapping ErrTemp.
func (c *Client) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	if c.Server == "" {
		return nil, fmt.Errorf("%w: no resolver configured", ErrTemp)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)
	typ := dns.TypeToString[qtype]
	var (
		resp *dns.Msg
		err  error
	)
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	for attempt := 0; attempt < 2; attempt++ {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		resp, _, err = udp.ExchangeContext(qctx, m, c.Server)
		cancel()
		if err == nil || ctx.Err() != nil || isRefused(err) {
			break
		}
	}
	if err == nil && resp.Truncated {
		tcp := &dns.Client{Net: "tcp", Timeout: timeout}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		resp, _, err = tcp.ExchangeContext(qctx, m, c.Server)
		cancel()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", ErrTemp, name, typ, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return &Answer{RRs: resp.Answer, NXDOMAIN: resp.Rcode == dns.RcodeNameError, AD: resp.AuthenticatedData}, nil
	}
	return nil, fmt.Errorf("%w: %s %s: %s", ErrTemp, name, typ, dns.RcodeToString[resp.Rcode])
}

// isRefused reports a connection refused (no server on the port): not
// worth a second try.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

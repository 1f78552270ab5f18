package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// errNXDomain and errDNSTemp classify lookup failures.
var (
	errNXDomain = errors.New("no such domain (NXDOMAIN)")
	errDNSTemp  = errors.New("temporary DNS failure")
)

// resolver asks one recursive name server, the way the Postfix SMTP client
// relies on the system resolver: recursion desired, EDNS0, TCP on TC.
type resolver struct {
	server  string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
}

func newResolver(server string, timeout time.Duration) *resolver {
	return &resolver{
		server:  server,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// defaultResolver returns the first name server of /etc/resolv.conf.
func defaultResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("reading /etc/resolv.conf: %w", err)
	}
	if len(cc.Servers) == 0 {
		return "", errors.New("no nameserver in /etc/resolv.conf")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// query sends one question. It returns the answer section for a NOERROR
// reply (empty for NODATA), errNXDomain for NXDOMAIN and an error wrapping
// errDNSTemp for everything else (SERVFAIL, REFUSED, timeouts, …): none of
// those may be taken for "no records".
func (r *resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	typ := dns.TypeToString[qtype]
	var (
		resp *dns.Msg
		err  error
	)
	// One retry over UDP: a lost datagram is common and cheap to repeat.
	for attempt := 0; attempt < 2; attempt++ {
		qctx, cancel := context.WithTimeout(ctx, r.timeout)
		resp, _, err = r.udp.ExchangeContext(qctx, m, r.server)
		cancel()
		if err == nil || ctx.Err() != nil {
			break
		}
	}
	if err == nil && resp.Truncated {
		qctx, cancel := context.WithTimeout(ctx, r.timeout)
		resp, _, err = r.tcp.ExchangeContext(qctx, m, r.server)
		cancel()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s: %v", errDNSTemp, name, typ, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		return resp.Answer, nil
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%s %s: %w", name, typ, errNXDomain)
	default:
		return nil, fmt.Errorf("%w: %s %s: %s", errDNSTemp, name, typ, dns.RcodeToString[resp.Rcode])
	}
}

// mxHost is one exchanger from the MX lookup.
type mxHost struct {
	host     string
	pref     uint16
	implicit bool
}

// errNullMX: the domain publishes "MX 0 ." (RFC 7505).
var errNullMX = errors.New("domain accepts no mail (null MX, RFC 7505)")

// lookupMX returns the exchangers of domain in preference order, at most
// max of them. RFC 5321 §5.1: NODATA (the name exists, no MX records) gives
// the implicit MX, the domain itself; NXDOMAIN is returned as errNXDomain;
// a failed lookup as errDNSTemp; a null MX as errNullMX.
func (r *resolver) lookupMX(ctx context.Context, domain string, max int) ([]mxHost, error) {
	ans, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var hosts []mxHost
	null := false
	seen := map[string]bool{}
	for _, rr := range ans {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue // CNAMEs on the way, signatures, …
		}
		h := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if h == "" {
			null = true
			continue
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		hosts = append(hosts, mxHost{host: h, pref: mx.Preference})
	}
	if null && len(hosts) == 0 {
		return nil, errNullMX
	}
	if len(hosts) == 0 {
		return []mxHost{{host: domain, implicit: true}}, nil
	}
	// Postfix randomises equal preferences; sort by name too so that
	// results are stable and comparable between probes.
	sort.Slice(hosts, func(i, j int) bool {
		if hosts[i].pref != hosts[j].pref {
			return hosts[i].pref < hosts[j].pref
		}
		return hosts[i].host < hosts[j].host
	})
	if max > 0 && len(hosts) > max {
		hosts = hosts[:max]
	}
	return hosts, nil
}

// lookupAddrs returns every A and AAAA address of host (A first). It fails
// only when there is no address: with errDNSTemp if a lookup failed
// temporarily, errNXDomain if the name does not exist, errNoAddress else.
// When one family's lookup fails and the other's gives addresses, those
// addresses are returned, as the Postfix SMTP client uses them too, and
// partial says which lookup failed: the picture is incomplete (an address
// of the failed family may behave otherwise), which the result must show
// and which must not be learned from.
func (r *resolver) lookupAddrs(ctx context.Context, host string) (addrs []netip.Addr, partial, err error) {
	type res struct {
		rrs []dns.RR
		err error
	}
	ch := make(chan res, 1)
	go func() {
		rrs, err := r.query(ctx, host, dns.TypeAAAA)
		ch <- res{rrs, err}
	}()
	a, errA := r.query(ctx, host, dns.TypeA)
	aaaa := <-ch
	seen := map[netip.Addr]bool{}
	add := func(ip net.IP) {
		if ad, ok := netip.AddrFromSlice(ip); ok {
			ad = ad.Unmap()
			if !seen[ad] {
				seen[ad] = true
				addrs = append(addrs, ad)
			}
		}
	}
	for _, rr := range a {
		if v, ok := rr.(*dns.A); ok {
			add(v.A)
		}
	}
	for _, rr := range aaaa.rrs {
		if v, ok := rr.(*dns.AAAA); ok {
			add(v.AAAA)
		}
	}
	if len(addrs) > 0 {
		switch {
		case errA != nil:
			partial = fmt.Errorf("lookup of A records failed, only IPv6 addresses probed: %w", errA)
		case aaaa.err != nil:
			partial = fmt.Errorf("lookup of AAAA records failed, only IPv4 addresses probed: %w", aaaa.err)
		}
		return addrs, partial, nil
	}
	switch {
	case errors.Is(errA, errDNSTemp):
		return nil, nil, errA
	case errors.Is(aaaa.err, errDNSTemp):
		return nil, nil, aaaa.err
	case errA != nil:
		return nil, nil, errA
	case aaaa.err != nil:
		return nil, nil, aaaa.err
	}
	return nil, nil, fmt.Errorf("%s: %w", host, errNoAddress)
}

var errNoAddress = errors.New("no A or AAAA record")

// hostPort joins an address and port for net.Dial.
func hostPort(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), strconv.Itoa(port))
}

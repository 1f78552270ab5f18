package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/probe"
)

// MaxPolicySize caps a policy file (RFC 8461 §3.3 suggests 64 KiB).
const MaxPolicySize = 64 << 10

// ErrPrivate is a policy host resolving only to loopback, private or
// otherwise non-public addresses while AllowPrivate is off.
var ErrPrivate = errors.New("policy host has no public address (allow_private is off)")

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	DNS          *dnsq.Client   // resolves _mta-sts TXT and the policy host
	RootCAs      *x509.CertPool // nil: the system roots
	Port         int            // HTTPS port of the policy host; 0 means 443
	AllowPrivate bool           // fetch from loopback/private addresses (tests)
}

// Fetcher looks up MTA-STS TXT records and fetches policy files.
type Fetcher struct {
	cfg    FetcherConfig
	client *http.Client
}

// NewFetcher returns a Fetcher. Policy fetches validate the host's
// certificate for mta-sts.<domain> against the Web PKI (RootCAs), follow
// no redirect, use no proxy, and dial only the addresses the configured
// resolver gives, after the private-address guard.
func NewFetcher(cfg FetcherConfig) *Fetcher {
	if cfg.Port == 0 {
		cfg.Port = 443
	}
	f := &Fetcher{cfg: cfg}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            f.dial,
		TLSClientConfig:        &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		DisableKeepAlives:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
	f.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // RFC 8461 §3.3: redirects are not followed
		},
	}
	return f
}

// TXT returns the id of domain's _mta-sts TXT record. It returns an error
// wrapping ErrNoRecord when there is none (NXDOMAIN, NODATA, no valid
// STSv1 record) and one wrapping dnsq.ErrTemp when the lookup failed.
func (f *Fetcher) TXT(ctx context.Context, domain string) (string, error) {
	ans, err := f.cfg.DNS.Query(ctx, "_mta-sts."+domain, dns.TypeTXT)
	if err != nil {
		return "", err
	}
	var recs []string
	for _, rr := range ans.RRs {
		if t, ok := rr.(*dns.TXT); ok {
			recs = append(recs, strings.Join(t.Txt, ""))
		}
	}
	return SelectTXT(recs)
}

// URL returns the policy URL of domain.
func (f *Fetcher) URL(domain string) string {
	host := "mta-sts." + domain
	if f.cfg.Port != 443 {
		host = net.JoinHostPort(host, strconv.Itoa(f.cfg.Port))
	}
	return "https://" + host + "/.well-known/mta-sts.txt"
}

// Fetch fetches and parses domain's policy file (RFC 8461 §3.3): HTTP 200
// only (no redirects), media type text/plain, at most MaxPolicySize bytes.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL(domain), nil)
	if err != nil {
		return nil, fmt.Errorf("mta-sts policy: %w", err)
	}
	req.Header.Set("User-Agent", "tlspolicyd")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mta-sts policy fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		what := resp.Status
		if loc := resp.Header.Get("Location"); loc != "" {
			what += " (redirect to " + strconv.Quote(loc) + ", not followed)"
		}
		return nil, fmt.Errorf("mta-sts policy fetch %s: HTTP %s", f.URL(domain), what)
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "text/plain" {
		return nil, fmt.Errorf("mta-sts policy fetch %s: content type %q, want text/plain", f.URL(domain), resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("mta-sts policy fetch %s: %w", f.URL(domain), err)
	}
	if len(b) > MaxPolicySize {
		return nil, fmt.Errorf("mta-sts policy fetch %s: larger than %d bytes", f.URL(domain), MaxPolicySize)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("mta-sts policy %s: %w", f.URL(domain), err)
	}
	return p, nil
}

// dial resolves the policy host with the configured resolver, drops
// non-public addresses unless AllowPrivate, and connects to the first
// address that answers.
func (f *Fetcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	var lastErr error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := f.cfg.DNS.Query(ctx, host, qt)
		if err != nil {
			lastErr = err
			continue
		}
		for _, rr := range ans.RRs {
			var ip net.IP
			switch v := rr.(type) {
			case *dns.A:
				ip = v.A
			case *dns.AAAA:
				ip = v.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	if len(addrs) == 0 {
		if lastErr != nil {
			return nil, lastErr
		}
		return nil, fmt.Errorf("%s: no A or AAAA record", host)
	}
	var d net.Dialer
	refused := 0
	for _, a := range addrs {
		if !f.cfg.AllowPrivate && !probe.PublicAddr(a) {
			refused++
			continue
		}
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	if refused == len(addrs) {
		return nil, fmt.Errorf("%s: %w", host, ErrPrivate)
	}
	return nil, lastErr
}

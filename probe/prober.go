package probe

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults of Config.
const (
	DefaultPort        = 25
	DefaultTimeout     = 30 * time.Second
	DefaultConcurrency = 32
	DefaultMaxMX       = 10
	DefaultMaxAddrs    = 32
	DefaultTTL         = 24 * time.Hour
	// RetryTTL is how long a temporary or unreachable result lives (at most
	// TTL): such targets are probed again sooner.
	RetryTTL = 15 * time.Minute
)

// Config configures a Prober. Zero values take the defaults.
type Config struct {
	// Resolver is the recursive name server (host:port) for MX, A and
	// AAAA lookups; "" uses the first nameserver of /etc/resolv.conf.
	Resolver string
	// Port is the SMTP port probed (default 25; tests use a loopback port).
	Port int
	// Timeout bounds every step: DNS query, connect, banner wait, each
	// command, handshake (default 30s; production banner waits need ≥30s).
	Timeout time.Duration
	// Concurrency bounds the DNS phases and SMTP sessions in flight
	// (default 32).
	Concurrency int
	// HELO is the EHLO name (default os.Hostname()).
	HELO string
	// AllowPrivate permits loopback, private, link-local, multicast and
	// unspecified addresses (tests); otherwise they are refused after
	// resolution, so a public name pointing at 127.0.0.1 is refused too.
	AllowPrivate bool
	// MaxMX is how many MX hosts are probed, in preference order
	// (default 10).
	MaxMX int
	// MaxAddrs caps the addresses probed per target over all MX hosts
	// (default 32), so a hostile zone cannot make one probe open
	// hundreds of connections.
	MaxAddrs int
	// MaxPerMinute caps the probes started within any 60 s (default
	// DefaultMaxPerMinute; negative: no cap). With MaxMX and MaxAddrs it
	// bounds the DNS queries and SMTP connections the daemon makes however
	// many distinct domains it is asked about — lookups for unlisted
	// domains schedule probes, and bounces to forged senders make lookups
	// for domains an attacker picks. A probe over the cap waits for its
	// turn, for as long as the caller's context allows; if the context
	// ends first, or its deadline falls before the turn, Probe fails with
	// ErrRateLimited and nothing is probed (the probe cache then keeps its
	// previous result and tries again at a later scan). Concurrent calls
	// for one target may each take a turn.
	MaxPerMinute int
	// TTL is how long a result is fresh (default 24h; temporary and
	// unreachable results at most RetryTTL).
	TTL time.Duration
	// Roots verifies certificates; nil uses the system roots.
	Roots *x509.CertPool
	// Logger receives debug logs of every probe (default slog.Default()).
	Logger *slog.Logger
}

// Prober probes targets. It is safe for concurrent use.
type Prober struct {
	cfg    Config
	res    *resolver
	resErr error // set when no resolver could be configured
	sem    chan struct{}
	starts *startWindow // nil: no MaxPerMinute cap
	group  singleflight.Group
	log    *slog.Logger
}

// New returns a Prober for cfg, with defaults filled in. A missing
// /etc/resolv.conf does not fail New: every MX lookup then fails
// temporarily with that error.
func New(cfg Config) *Prober {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxMX <= 0 {
		cfg.MaxMX = DefaultMaxMX
	}
	if cfg.MaxAddrs <= 0 {
		cfg.MaxAddrs = DefaultMaxAddrs
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxPerMinute == 0 {
		cfg.MaxPerMinute = DefaultMaxPerMinute
	}
	if cfg.HELO == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.HELO = h
		} else {
			cfg.HELO = "localhost"
		}
	}
	p := &Prober{cfg: cfg, sem: make(chan struct{}, cfg.Concurrency), log: cfg.Logger}
	if p.log == nil {
		p.log = slog.Default()
	}
	if cfg.MaxPerMinute > 0 {
		p.starts = newStartWindow(cfg.MaxPerMinute, time.Minute)
	}
	server := cfg.Resolver
	if server == "" {
		server, p.resErr = defaultResolver()
	}
	// DNS answers come quickly or not at all: do not let one lost query
	// eat a whole 30 s step.
	p.res = newResolver(server, min(cfg.Timeout, 5*time.Second))
	return p
}

// Config returns the configuration in use, defaults filled in.
func (p *Prober) Config() Config { return p.cfg }

// Probe probes target — "domain", "domain:port", "[host]" or "[host]:port"
// — and returns its verdict. Concurrent calls for the same target share one
// probe (and one Result). The probe runs to its end, bounded by the
// per-step timeouts, even when ctx ends first, so that the other callers
// and the cache still get it; ctx only bounds the wait, including the wait
// for a turn under MaxPerMinute. The error is non-nil only for a malformed
// target (ErrBadTarget), an ended ctx, the rate limit (ErrRateLimited) or
// an internal error: every network outcome is in the Result.
func (p *Prober) Probe(ctx context.Context, target string) (*Result, error) {
	t, err := parseTarget(target, p.cfg.Port)
	if err != nil {
		return nil, err
	}
	if p.starts != nil {
		if err := p.starts.wait(ctx); err != nil {
			p.log.Debug("probe not started", "target", t.key, "error", err)
			return nil, fmt.Errorf("probe %s: %w", t.key, err)
		}
	}
	detached := context.WithoutCancel(ctx)
	ch := p.group.DoChan(t.key, func() (res any, err error) {
		// singleflight re-panics in a goroutine of its own, which would
		// take the daemon down: turn a panic into an error instead.
		defer func() {
			if v := recover(); v != nil {
				p.log.Error("probe panicked", "target", t.key, "panic", v)
				res, err = nil, fmt.Errorf("probe %s: internal error: %v", t.key, v)
			}
		}()
		return p.probe(detached, t), nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Result), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("probe %s: %w", t.key, ctx.Err())
	}
}

func (p *Prober) acquire(ctx context.Context) error {
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Prober) release() { <-p.sem }

// probe does the work of Probe.
func (p *Prober) probe(ctx context.Context, t target) *Result {
	start := time.Now()
	r := &Result{Target: t.key, NextHop: t.host, Port: t.port, Time: start.UTC()}
	defer func() {
		r.Duration = time.Since(start)
		ttl := p.cfg.TTL
		if r.Status == StatusTemporary || r.Status == StatusUnreachable {
			ttl = min(ttl, RetryTTL)
		}
		r.Expires = r.Time.Add(ttl)
		p.log.Debug("probed", "target", r.Target, "status", r.Status, "reason", r.Reason, "took", r.Duration)
	}()

	if err := p.acquire(ctx); err != nil {
		r.Status, r.ErrorClass, r.Reason = StatusTemporary, ClassDNSTemp, err.Error()
		r.Judge()
		return r
	}
	r.MX = p.resolve(ctx, t, r)
	p.release()
	if r.Status != "" {
		r.Judge()
		return r
	}

	// Every address of every MX host, concurrently; the semaphore bounds
	// the sessions in flight over all probes.
	var wg sync.WaitGroup
	for i := range r.MX {
		mx := &r.MX[i]
		for j := range mx.Addrs {
			a := &mx.Addrs[j]
			if a.ErrorClass != "" { // refused before connecting
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if v := recover(); v != nil {
						p.log.Error("probe panicked", "target", t.key, "addr", a.Addr, "panic", v)
						a.Error, a.ErrorClass = fmt.Sprintf("internal error: %v", v), ClassProtocol
					}
				}()
				addr := netip.MustParseAddr(a.Addr)
				if err := p.acquire(ctx); err != nil {
					a.Error, a.ErrorClass = err.Error(), ClassTimeout
					return
				}
				defer p.release()
				*a = p.probeAddr(ctx, mx.Host, t.host, addr, t.port)
			}()
		}
	}
	wg.Wait()
	r.Judge()
	noteIncomplete(r)
	return r
}

// noteIncomplete adds to r.Reason the MX hosts whose address lookup failed
// in part (addresses of one family found, the other's lookup failed): the
// verdict covers only the addresses found, and says so.
func noteIncomplete(r *Result) {
	var notes []string
	for _, mx := range r.MX {
		if len(mx.Addrs) > 0 && mx.ErrorClass != "" {
			notes = append(notes, mx.Host+": "+mx.Error)
		}
	}
	if len(notes) == 0 {
		return
	}
	if r.Reason != "" {
		r.Reason += "; "
	}
	r.Reason += "address lookup incomplete: " + joinReasons(notes)
}

// AddrsKnown reports whether r's MX lookup and every MX host's address
// lookups completed, so that r shows every address a delivery could use:
// no MX host's lookup failed temporarily (SERVFAIL, timeout), not even
// for one address family. A learned policy is derived only from such a
// result. A host that does not exist or has no address is known too: the
// Postfix SMTP client skips it as well.
func AddrsKnown(r *Result) bool {
	if r.ErrorClass == ClassDNSTemp {
		return false
	}
	for _, mx := range r.MX {
		if mx.ErrorClass == ClassDNSTemp {
			return false
		}
	}
	return true
}

// resolve finds the MX hosts and their addresses. A failure of the target
// as a whole (null MX, NXDOMAIN, DNS failure) is written to r.Status.
// Addresses that must not be probed are returned already failed.
func (p *Prober) resolve(ctx context.Context, t target, r *Result) []MXResult {
	var hosts []mxHost
	if t.useMX {
		if p.resErr != nil {
			r.Status, r.ErrorClass = StatusTemporary, ClassDNSTemp
			r.Reason = t.host + ": MX lookup impossible: " + p.resErr.Error()
			return nil
		}
		var err error
		hosts, err = p.res.lookupMX(ctx, t.host, p.cfg.MaxMX)
		switch {
		case errors.Is(err, errNullMX):
			r.Status, r.Reason = StatusNoMail, t.host+": "+err.Error()
			return nil
		case errors.Is(err, errNXDomain):
			r.Status, r.ErrorClass = StatusUnreachable, ClassNXDomain
			r.Reason = t.host + ": " + errNXDomain.Error()
			return nil
		case err != nil:
			r.Status, r.ErrorClass = StatusTemporary, ClassDNSTemp
			r.Reason = "MX lookup failed: " + err.Error()
			return nil
		}
	} else {
		hosts = []mxHost{{host: t.host}}
	}

	mxs := make([]MXResult, len(hosts))
	addrs := make([][]netip.Addr, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		mxs[i] = MXResult{Host: h.host, Preference: h.pref, Implicit: h.implicit}
		if t.literal.IsValid() {
			addrs[i] = []netip.Addr{t.literal}
			continue
		}
		if p.resErr != nil {
			mxs[i].Error, mxs[i].ErrorClass = "address lookup impossible: "+p.resErr.Error(), ClassDNSTemp
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, partial, err := p.res.lookupAddrs(ctx, h.host)
			// A partial failure keeps the addresses found and is recorded
			// like a failure: the MX has addresses and an error.
			if err == nil {
				err = partial
			}
			if err != nil {
				mxs[i].Error = err.Error()
				switch {
				case errors.Is(err, errDNSTemp):
					mxs[i].ErrorClass = ClassDNSTemp
				case errors.Is(err, errNXDomain):
					mxs[i].ErrorClass = ClassNXDomain
				default:
					mxs[i].ErrorClass = ClassNoAddress
				}
			}
			addrs[i] = a
		}()
	}
	wg.Wait()

	budget := p.cfg.MaxAddrs
	for i := range mxs {
		for k, a := range addrs[i] {
			if budget == 0 {
				if mxs[i].Error != "" {
					mxs[i].Error += "; "
				}
				mxs[i].Error += fmt.Sprintf("%d address(es) not probed: limit of %d per target", len(addrs[i])-k, p.cfg.MaxAddrs)
				break
			}
			budget--
			ar := AddrResult{Addr: a.String(), Port: t.port}
			if !p.cfg.AllowPrivate && !publicAddr(a) {
				ar.ErrorClass = ClassPrivate
				ar.Error = "refused: non-public address (allow_private is off)"
			}
			mxs[i].Addrs = append(mxs[i].Addrs, ar)
		}
	}
	return mxs
}

package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/miekg/dns"

	"github.com/tlspolicyd/tlspolicyd/dane"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/dnsq"
	"github.com/tlspolicyd/tlspolicyd/mtasts"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/sources"
	"github.com/tlspolicyd/tlspolicyd/srccache"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// newSources builds the DANE and MTA-STS sources on cache, or returns nil
// when both are off. The resolver is the prober's.
func newSources(cfg config.Config, log *slog.Logger, cache *srccache.Cache) (*sources.Manager, error) {
	if !cfg.Sources.DANE && !cfg.Sources.MTASTS {
		return nil, nil
	}
	danes, fetcher, err := sourceClients(cfg)
	if err != nil {
		return nil, err
	}
	return sources.New(sources.Config{Cache: cache, Timeout: cfg.Sources.Timeout, Logger: log, DANE: danes, MTASTS: fetcher})
}

// resolverServer returns probe.resolver, else the first name server of
// /etc/resolv.conf.
func resolverServer(cfg config.Config) (string, error) {
	if cfg.Probe.Resolver != "" {
		return cfg.Probe.Resolver, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return "", fmt.Errorf("no resolver: set probe.resolver (%v)", err)
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// httpsRoots returns the system's CAs plus sources.https_ca, trusted for
// MTA-STS policy fetches and TLS-RPT https: reports.
func httpsRoots(cfg config.Config) (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if cfg.Sources.HTTPSCA != "" {
		pem, err := os.ReadFile(cfg.Sources.HTTPSCA)
		if err != nil {
			return nil, fmt.Errorf("sources.https_ca: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sources.https_ca %s: no PEM certificate in it", cfg.Sources.HTTPSCA)
		}
	}
	return roots, nil
}

// sourceClients returns the DANE resolver and the MTA-STS fetcher the
// configuration enables (nil when off), on the prober's resolver.
func sourceClients(cfg config.Config) (*dane.Resolver, *mtasts.Fetcher, error) {
	server, err := resolverServer(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("sources: %w", err)
	}
	client := &dnsq.Client{Server: server, Timeout: 5 * time.Second}
	var (
		d *dane.Resolver
		f *mtasts.Fetcher
	)
	if cfg.Sources.DANE {
		d = &dane.Resolver{DNS: client}
	}
	if cfg.Sources.MTASTS {
		roots, err := httpsRoots(cfg)
		if err != nil {
			return nil, nil, err
		}
		f = mtasts.NewFetcher(mtasts.FetcherConfig{DNS: client, RootCAs: roots,
			Port: cfg.Sources.MTASTSPort, AllowPrivate: cfg.Probe.AllowPrivate})
	}
	return d, f, nil
}

// requestTimeout is the socketmap watchdog's bound on one lookup: the
// default, raised to sources.timeout plus a second when the sources are
// on, so that a slow policy host yields the RFCs' "no policy known"
// answer rather than the watchdog's TEMP (Postfix waits 100 s for a
// reply, so the longer bound costs nothing).
func requestTimeout(cfg config.Config) time.Duration {
	t := socketmap.DefaultRequestTimeout
	if cfg.Sources.DANE || cfg.Sources.MTASTS {
		t = max(t, cfg.Sources.Timeout+time.Second)
	}
	return t
}

// offlineSources returns the enabled sources answering from the daemon's
// source cache snapshot as it is, never fetching (query), or nil when the
// sources are off or there is no snapshot.
func offlineSources(cfg config.Config, errw io.Writer) *sources.Manager {
	if !cfg.Sources.DANE && !cfg.Sources.MTASTS {
		return nil
	}
	cache, rep := readCache(cfg)
	if cache == nil || cache.Count(srccache.KindMTASTS)+cache.Count(srccache.KindDANE) == 0 {
		return nil
	}
	if rep.Corrupt != nil {
		fmt.Fprintf(errw, "tlspolicyd: cache %s not read whole: %v\n", rep.Corrupt.Path, rep.Corrupt.Err)
	}
	mc := sources.Config{Cache: cache, Offline: true}
	if cfg.Sources.DANE {
		mc.DANE = &dane.Resolver{}
	}
	if cfg.Sources.MTASTS {
		mc.MTASTS = &mtasts.Fetcher{}
	}
	m, err := sources.New(mc)
	if err != nil {
		return nil
	}
	return m
}

// webSources returns src for web.Options, an untyped nil when it is nil.
func webSources(src *sources.Manager) web.SourcesInfo {
	if src == nil {
		return nil
	}
	return src
}

// sourceEvictedEvent is the event for a record the full source cache
// evicted: only a policy still in force is one (dropping it early weakens
// enforcement until the next fetch), a DANE defer included (records exist
// but the lookup failed: the shortest-lived, so evicted first); ok is
// false for the others.
func sourceEvictedEvent(r *srccache.Record, now time.Time) (ev events.Event, ok bool) {
	if r.Answer == "" && !r.Temp || !r.Valid(now) {
		return events.Event{}, false
	}
	rule, what := r.Answer, "policy"
	if r.Temp {
		rule, what = "defer", "DANE defer (records exist, the lookup failed)"
	}
	return events.Event{Kind: events.SourceEvicted, Domain: r.Domain, Rule: rule, Source: string(r.Kind),
		Reason: "source cache full: " + what + " dropped before it expired at " + r.Expires.UTC().Format(time.RFC3339)}, true
}

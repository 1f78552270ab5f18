package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/srccache"
)

// defaultConfigPath is the --config default, read when it exists. A var
// so that tests do not read the file a package installed on the machine.
var defaultConfigPath = "/etc/tlspolicyd/tlspolicyd.yaml"

func configFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigPath, Usage: "daemon configuration `FILE` (YAML); optional when --table is given"},
		&cli.StringFlag{Name: "table", Aliases: []string{"t"}, DefaultText: "/etc/tlspolicyd/table", Usage: "policy table: a YAML `PATH` or a directory of *.yaml/*.yml (a git checkout)"},
	}
}

// keyFlag binds a configuration key to the flag that overrides it.
type keyFlag struct {
	key  string                   // dotted YAML path, e.g. "probe.timeout"
	flag string                   // its flag, e.g. "probe-timeout"
	dst  func(*config.Config) any // the field set: *string, *int, *bool or *time.Duration
}

// keyFlags lists every configuration key with its flag (README, "Daemon
// configuration": every key has one, and a flag wins). serve defines all
// of them; the other commands define those they use, and loadConfig
// applies whichever is set.
func keyFlags() []keyFlag {
	return []keyFlag{
		{"table", "table", func(c *config.Config) any { return &c.Table }},
		{"listen.socketmap", "socketmap", func(c *config.Config) any { return &c.Listen.Socketmap }},
		{"listen.policyd", "policyd", func(c *config.Config) any { return &c.Listen.Policyd }},
		{"listen.http", "http", func(c *config.Config) any { return &c.Listen.HTTP }},
		{"listen.pprof", "pprof", func(c *config.Config) any { return &c.Listen.Pprof }},
		{"socket_mode", "socket-mode", func(c *config.Config) any { return &c.SocketMode }},
		{"max_connections", "max-connections", func(c *config.Config) any { return &c.MaxConnections }},
		{"probe.resolver", "resolver", func(c *config.Config) any { return &c.Probe.Resolver }},
		{"probe.port", "probe-port", func(c *config.Config) any { return &c.Probe.Port }},
		{"probe.timeout", "probe-timeout", func(c *config.Config) any { return &c.Probe.Timeout }},
		{"probe.concurrency", "probe-concurrency", func(c *config.Config) any { return &c.Probe.Concurrency }},
		{"probe.ttl", "probe-ttl", func(c *config.Config) any { return &c.Probe.TTL }},
		{"probe.cache", "probe-cache", func(c *config.Config) any { return &c.Probe.Cache }},
		{"probe.helo", "helo", func(c *config.Config) any { return &c.Probe.HELO }},
		{"probe.allow_private", "allow-private", func(c *config.Config) any { return &c.Probe.AllowPrivate }},
		{"probe.interval", "probe-interval", func(c *config.Config) any { return &c.Probe.Interval }},
		{"probe.max_per_minute", "probe-max-per-minute", func(c *config.Config) any { return &c.Probe.MaxPerMinute }},
		{"probe.monitor_workers", "probe-monitor-workers", func(c *config.Config) any { return &c.Probe.MonitorWorkers }},
		{"probe.max_entries", "probe-max-entries", func(c *config.Config) any { return &c.Probe.MaxEntries }},
		{"alerts.mail_to", "alert-mail-to", func(c *config.Config) any { return &c.Alerts.MailTo }},
		{"alerts.smtp", "alert-smtp", func(c *config.Config) any { return &c.Alerts.SMTP }},
		{"alerts.webhook", "alert-webhook", func(c *config.Config) any { return &c.Alerts.Webhook }},
		{"alerts.interval", "alert-interval", func(c *config.Config) any { return &c.Alerts.Interval }},
		{"alerts.from", "alert-from", func(c *config.Config) any { return &c.Alerts.From }},
		{"log.format", "log-format", func(c *config.Config) any { return &c.Log.Format }},
		{"log.level", "log-level", func(c *config.Config) any { return &c.Log.Level }},
		{"log.events", "event-log", func(c *config.Config) any { return &c.Log.Events }},
		{"log.events_max_mb", "event-log-max-mb", func(c *config.Config) any { return &c.Log.EventsMaxMB }},
		{"log.events_keep", "event-log-keep", func(c *config.Config) any { return &c.Log.EventsKeep }},
		{"sources.dane", "dane", func(c *config.Config) any { return &c.Sources.DANE }},
		{"sources.mta_sts", "mta-sts", func(c *config.Config) any { return &c.Sources.MTASTS }},
		{"sources.timeout", "sources-timeout", func(c *config.Config) any { return &c.Sources.Timeout }},
		{"sources.https_ca", "https-ca", func(c *config.Config) any { return &c.Sources.HTTPSCA }},
		{"sources.mta_sts_port", "mta-sts-port", func(c *config.Config) any { return &c.Sources.MTASTSPort }},
		{"sources.cache", "sources-cache", func(c *config.Config) any { return &c.Sources.Cache }},
		{"sources.max_records", "sources-max-records", func(c *config.Config) any { return &c.Sources.MaxRecords }},
		{"maillog", "maillog", func(c *config.Config) any { return &c.Maillog }},
		{"tlsrpt.enabled", "tlsrpt", func(c *config.Config) any { return &c.TLSRPT.Enabled }},
		{"tlsrpt.organization", "tlsrpt-organization", func(c *config.Config) any { return &c.TLSRPT.Organization }},
		{"tlsrpt.contact", "tlsrpt-contact", func(c *config.Config) any { return &c.TLSRPT.Contact }},
		{"shared_cache", "shared-cache", func(c *config.Config) any { return &c.SharedCache }},
		{"shared_cache_password_file", "shared-cache-password-file", func(c *config.Config) any { return &c.SharedCachePasswordFile }},
		{"shared_cache_ca", "shared-cache-ca", func(c *config.Config) any { return &c.SharedCacheCA }},
		{"shared_cache_cluster", "shared-cache-cluster", func(c *config.Config) any { return &c.SharedCacheCluster }},
		{"shared_cache_node", "shared-cache-node", func(c *config.Config) any { return &c.SharedCacheNode }},
	}
}

// loadConfig reads --config and applies every flag that was set on top.
// A value that cannot work names its flag when a flag set it.
func loadConfig(c *cli.Context) (config.Config, error) {
	path := c.String("config")
	missingOK := !c.IsSet("config")
	cfg, err := config.Load(path, missingOK)
	if err != nil {
		return cfg, err
	}
	setBy := map[string]string{} // key → flag
	for _, kf := range keyFlags() {
		if !c.IsSet(kf.flag) {
			continue
		}
		switch p := kf.dst(&cfg).(type) {
		case *string:
			*p = c.String(kf.flag)
		case *int:
			*p = c.Int(kf.flag)
		case *bool:
			*p = c.Bool(kf.flag)
		case *time.Duration:
			*p = flagDuration(c, kf.flag)
		default:
			return cfg, fmt.Errorf("--%s: %s is a %T, which no flag type sets", kf.flag, kf.key, p)
		}
		setBy[kf.key] = kf.flag
	}
	if err := cfg.Validate(); err != nil {
		var ke *config.KeyError
		if errors.As(err, &ke) && setBy[ke.Key] != "" {
			return cfg, fmt.Errorf("--%s: %w", setBy[ke.Key], err)
		}
		return cfg, err
	}
	return cfg, nil
}

func serveCommand() *cli.Command {
	// Defaults are DefaultText, not in Usage: urfave/cli prints an unset
	// number's zero value as its default otherwise. TestServeFlagDefaults
	// holds them to config.Default().
	flags := append(configFlags(),
		&cli.StringFlag{Name: "socketmap", DefaultText: "127.0.0.1:10041", Usage: "socketmap listener `ADDR` (host:port or unix:/path) for smtp_tls_policy_maps"},
		&cli.StringFlag{Name: "policyd", DefaultText: "127.0.0.1:10042", Usage: "policy delegation listener `ADDR` for check_policy_service; \"\" disables"},
		&cli.StringFlag{Name: "http", DefaultText: "127.0.0.1:10043", Usage: "HTTP listener `ADDR` for /healthz, /metrics, the status page and the JSON API; \"\" disables"},
		&cli.StringFlag{Name: "pprof", DefaultText: "off", Usage: "serve Go profiles (net/http/pprof: /debug/pprof/profile, heap, allocs, goroutine) on `ADDR`, a listener of its own, never the --http one. Use loopback, e.g. 127.0.0.1:6060: profiles reveal the command line and goroutine stacks, and anyone who can connect can make the daemon spend CPU on profiling"},
		&cli.StringFlag{Name: "socket-mode", DefaultText: "0660", Usage: "permission bits for unix: sockets, octal `MODE`"},
		&cli.IntFlag{Name: "max-connections", DefaultText: "1000", Usage: "connections per socketmap/policyd listener `N`"},
		&cli.StringFlag{Name: "resolver", DefaultText: "/etc/resolv.conf", Usage: "DNS resolver `HOST:PORT` for the prober"},
		&cli.IntFlag{Name: "probe-port", DefaultText: "25", Usage: "SMTP `PORT` the prober connects to"},
		durationFlag("probe-timeout", 0, "30s", "bound on each probe step (DNS, connect, banner, each command, handshake), a `DURATION`"),
		&cli.IntFlag{Name: "probe-concurrency", DefaultText: "32", Usage: "probe connections in flight at most, `N`"},
		durationFlag("probe-ttl", 0, "24h", "how long a probe result is fresh, a `DURATION`"),
		&cli.StringFlag{Name: "probe-cache", DefaultText: "/var/lib/tlspolicyd/probes.json", Usage: "probe cache `FILE`; \"\" keeps results in memory only"},
		&cli.StringFlag{Name: "helo", DefaultText: "this host's name", Usage: "EHLO `NAME` the prober sends"},
		&cli.BoolFlag{Name: "allow-private", DefaultText: "false", Usage: "probe loopback and private addresses (tests only)"},
		durationFlag("probe-interval", 0, "1h", "re-probe every enforced and testing outbound entry each `DURATION` (jittered)"),
		&cli.IntFlag{Name: "probe-max-per-minute", DefaultText: "120", Usage: "probes started per minute, by the monitor and for learned policies together, `N`; 0 = no cap"},
		&cli.IntFlag{Name: "probe-monitor-workers", DefaultText: "4", Usage: "probes the monitor has in flight at most, `N`"},
		&cli.IntFlag{Name: "probe-max-entries", DefaultText: "50000", Usage: "probe results kept at most, `N`, and as many learned policies"},
		&cli.StringFlag{Name: "alert-mail-to", DefaultText: "none", Usage: "postmaster `ADDRESS` alert digests are mailed to; \"\" disables mail"},
		&cli.StringFlag{Name: "alert-smtp", DefaultText: "127.0.0.1:25", Usage: "SMTP relay `HOST:PORT` alert mail is sent through"},
		&cli.StringFlag{Name: "alert-webhook", DefaultText: "none", Usage: "`URL` receiving alerts as JSON; \"\" disables"},
		durationFlag("alert-interval", 0, "1h", "at most one alert per domain and kind per `DURATION`"),
		&cli.StringFlag{Name: "alert-from", DefaultText: "tlspolicyd@ and this host's fully-qualified name", Usage: "sender `ADDRESS` of alert mail (envelope and From:)"},
		&cli.StringFlag{Name: "log-format", DefaultText: "text", Usage: "log `FORMAT`: text or json"},
		&cli.StringFlag{Name: "log-level", DefaultText: "info", Usage: "log `LEVEL`: debug, info, warn or error"},
		&cli.StringFlag{Name: "event-log", DefaultText: "/var/lib/tlspolicyd/events.jsonl", Usage: "JSON-lines event log `FILE`; \"\" keeps events in memory only"},
		&cli.IntFlag{Name: "event-log-max-mb", DefaultText: "10", Usage: "rotate the event log past `MIB` MiB"},
		&cli.IntFlag{Name: "event-log-keep", DefaultText: "3", Usage: "rotated event log files kept, `N`: the disk holds at most (1 + N) × --event-log-max-mb MiB of events"},
		&cli.BoolFlag{Name: "dane", DefaultText: "true", Usage: "answer DANE (dane-only/dane) for unlisted domains with authenticated TLSA records; needs a DNSSEC-validating --resolver; --dane=false disables"},
		&cli.BoolFlag{Name: "mta-sts", DefaultText: "true", Usage: "answer enforced MTA-STS policies for unlisted domains; --mta-sts=false disables"},
		durationFlag("sources-timeout", 0, "5s", "how long a lookup waits for a domain's first DANE/MTA-STS work, a `DURATION`; then it answers without it"),
		&cli.StringFlag{Name: "https-ca", DefaultText: "none", Usage: "extra CA certificate `FILE` (PEM) trusted for MTA-STS policy fetches (tests)"},
		&cli.IntFlag{Name: "mta-sts-port", DefaultText: "443", Usage: "HTTPS `PORT` of mta-sts.<domain> (tests)"},
		&cli.StringFlag{Name: "sources-cache", DefaultText: "sources.json next to the probe cache", Usage: "DANE/MTA-STS snapshot `FILE` of an earlier version, merged into the cache (--probe-cache) at start; the cache file when --probe-cache is \"\""},
		&cli.IntFlag{Name: "sources-max-records", DefaultText: "100000", Usage: "DANE records kept at most, `N`, and as many MTA-STS records"},
		&cli.StringFlag{Name: "shared-cache", DefaultText: "off", Usage: "share learned policies, MTA-STS, DANE and probe results, alert claims and events with a fleet through Redis or Valkey at `URL` (redis://[user:pass@]host:port/db, rediss://, unix:///path, redis-sentinel://host:port?master_name=NAME)"},
		&cli.StringFlag{Name: "shared-cache-password-file", Usage: "read the shared cache's password from `FILE` (e.g. a systemd credential)"},
		&cli.StringFlag{Name: "shared-cache-ca", Usage: "verify a rediss:// shared cache against the CA bundle `FILE` instead of the system's"},
		&cli.StringFlag{Name: "shared-cache-cluster", DefaultText: "default", Usage: "the fleet's `NAME`: daemons share records only within it (keys tlspolicyd:NAME:…)"},
		&cli.StringFlag{Name: "shared-cache-node", DefaultText: "host name", Usage: "this daemon's `NAME` in the fleet"},
		&cli.StringFlag{Name: "maillog", DefaultText: "off", Usage: "follow Postfix's log, a file `PATH` (e.g. /var/log/mail.log, followed across rotation) or \"journal\", for the outbound TLS report, stuck-mail alerts and TLS-RPT; needs smtp_tls_loglevel = 1 in main.cf"},
		&cli.BoolFlag{Name: "tlsrpt", Usage: "send daily TLS-RPT (RFC 8460) reports, from what --maillog reads, to destination domains that publish _smtp._tls (mailto: through --alert-smtp, https: by POST)"},
		&cli.StringFlag{Name: "tlsrpt-organization", Usage: "organization-name of the TLS-RPT reports, `NAME`"},
		&cli.StringFlag{Name: "tlsrpt-contact", Usage: "contact-info of the TLS-RPT reports, an `ADDRESS` the domains' postmasters can write to"},
	)
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon: socketmap (outbound) and policy delegation (inbound) servers",
		Description: `Loads the policy table (exit 1 with file:line errors if it is invalid), then
answers Postfix until SIGTERM/SIGINT. The table reloads by itself when a file in
its directory changes (also when replaced by rename, as git checkout does) and on
SIGHUP; a table with errors never replaces the one serving.

Postfix main.cf:
  smtp_tls_policy_maps = socketmap:inet:127.0.0.1:10041:tls_policy`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("tlspolicyd serve: unexpected arguments: "+strings.Join(c.Args().Slice(), " ")+" (the table is --table PATH)", 2)
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			return serve(c.Context, cfg, c.App.ErrWriter)
		},
	}
}

// pprofMux serves the net/http/pprof handlers under /debug/pprof/ and
// nothing else. It is a mux of its own: importing net/http/pprof also
// registers them on http.DefaultServeMux, which no server here uses.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, allocs, goroutine, block, mutex, threadcreate
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// localAddr reports whether a listener's address is reachable from this
// host only: loopback TCP or a unix socket.
func localAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// newProber builds the STARTTLS prober from the probe configuration.
func newProber(cfg config.Config, log *slog.Logger) *probe.Prober {
	perMinute := cfg.Probe.MaxPerMinute
	if perMinute == 0 {
		perMinute = -1 // the configuration's "no cap"; probe.Config's 0 is its default
	}
	return probe.New(probe.Config{
		MaxPerMinute: perMinute,
		Resolver:     cfg.Probe.Resolver,
		Port:         cfg.Probe.Port,
		Timeout:      cfg.Probe.Timeout,
		Concurrency:  cfg.Probe.Concurrency,
		HELO:         cfg.Probe.HELO,
		AllowPrivate: cfg.Probe.AllowPrivate,
		TTL:          cfg.Probe.TTL,
		Logger:       log.With("component", "probe"),
	})
}

// probeRingEvent maps a probe cache event to the event published to the
// ring (and so to metrics, alerts and the event log): a learned encrypt
// kept against a probe without STARTTLS, or dropped early from a full
// probe cache. ok is false for the kinds that are only logged (learned,
// unlearned).
// probesOptions is the probe cache's configuration. The cache logs its
// events itself (component=probe-cache); OnEvent only publishes those
// that are enforcement events.
func probesOptions(log *slog.Logger, ring *events.Ring, probeFn probe.Func, ttl time.Duration) srccache.ProbesOptions {
	return srccache.ProbesOptions{
		Probe:  probeFn,
		TTL:    ttl,
		Logger: log.With("component", "probe-cache"),
		OnEvent: func(e probe.Event) {
			if ev, ok := probeRingEvent(e); ok {
				ring.Publish(ev)
			}
		},
	}
}

// alertConfig is the alerter's configuration; alert.New tags its log
// lines component=alert itself.
func alertConfig(cfg config.Config, log *slog.Logger) alert.Config {
	return alert.Config{MailTo: cfg.Alerts.MailTo, SMTP: cfg.Alerts.SMTP, Webhook: cfg.Alerts.Webhook,
		Interval: cfg.Alerts.Interval, From: cfg.Alerts.From, Logger: log}
}

func probeRingEvent(e probe.Event) (ev events.Event, ok bool) {
	var kind events.Kind
	switch e.Kind {
	case probe.EventDowngradeRefused:
		kind = events.LearnedDowngrade
	case probe.EventLearnedEvicted:
		kind = events.LearnedEvicted
	case probe.EventCorrupt:
		return events.Event{Kind: events.CacheCorrupt, Rule: "probe cache", Source: e.Target, Reason: e.Reason}, true
	default:
		return events.Event{}, false
	}
	return events.Event{Kind: kind, Domain: e.Target, Reason: e.Reason}, true
}

// activatedListeners returns the sockets systemd passed (LISTEN_FDS, see
// sd_listen_fds(3)) by their FileDescriptorName: socketmap, policyd, http.
// Without socket activation it returns nil.
func activatedListeners() (map[string]net.Listener, error) {
	if os.Getenv("LISTEN_FDS") == "" {
		return nil, nil
	}
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, err
	}
	out := map[string]net.Listener{}
	for name, ls := range named {
		switch name {
		case "socketmap", "policyd", "http":
		default:
			return nil, fmt.Errorf("socket named %q: set FileDescriptorName= to socketmap, policyd or http in the .socket unit", name)
		}
		if len(ls) != 1 || ls[0] == nil {
			return nil, fmt.Errorf("socket %q: want exactly one stream socket, got %d", name, len(ls))
		}
		out[name] = ls[0]
	}
	return out, nil
}

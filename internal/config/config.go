// Package config reads the daemon configuration (README.md, "Daemon configuration"): a YAML file
// whose every key also has a command-line flag; a flag wins over the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Listen holds the listener addresses ("host:port", "[::1]:port" or
// "unix:/path"; "" disables the listener).
type Listen struct {
	Socketmap string `yaml:"socketmap"`
	Policyd   string `yaml:"policyd"`
	HTTP      string `yaml:"http"`
	// Pprof serves net/http/pprof (CPU, heap, allocation and goroutine
	// profiles) on a listener of its own, never on HTTP's; "" (the
	// default) disables it. Keep it on loopback: profiles reveal the
	// command line and goroutine stacks, and cost CPU.
	Pprof string `yaml:"pprof"`
}

// Probe configures the STARTTLS prober.
type Probe struct {
	Resolver     string        `yaml:"resolver"`
	Port         int           `yaml:"port"`
	Timeout      time.Duration `yaml:"timeout"`
	Concurrency  int           `yaml:"concurrency"`
	TTL          time.Duration `yaml:"ttl"`
	Cache        string        `yaml:"cache"` // the daemon's one cache file (every record kind)
	HELO         string        `yaml:"helo"`
	AllowPrivate bool          `yaml:"allow_private"`
	// Interval is how often every enforced and testing outbound entry is
	// re-probed (jittered by ±10%).
	Interval time.Duration `yaml:"interval"`
	// MaxPerMinute caps the probes started within any minute, by the
	// monitor and for learned policies together (0: no cap). It bounds
	// the DNS queries and SMTP connections the daemon makes; a table too
	// large to re-probe within interval at this rate is re-probed over
	// several intervals, least recently probed first.
	MaxPerMinute int `yaml:"max_per_minute"`
	// MonitorWorkers is how many probes the monitor has in flight at most.
	MonitorWorkers int `yaml:"monitor_workers"`
	// MaxEntries bounds the probe results kept, and separately the
	// learned policies; past it the oldest make room.
	MaxEntries int `yaml:"max_entries"`
}

// Alerts configures alert delivery.
type Alerts struct {
	MailTo   string        `yaml:"mail_to"`
	SMTP     string        `yaml:"smtp"`
	Webhook  string        `yaml:"webhook"`
	Interval time.Duration `yaml:"interval"`
	// From is the sender of alert mail; "" = tlspolicyd@ and the host's
	// fully-qualified name.
	From string `yaml:"from"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
	// Events is the append-only JSON-lines event log (rotated by size,
	// read back at start so a restart loses no event); "" disables it.
	Events string `yaml:"events"`
	// EventsMaxMB is the size in MiB past which the event log is rotated
	// (to events.jsonl.1, the older ones shifted), EventsKeep how many
	// rotated files are kept: together what the disk holds of the event
	// history, (1 + EventsKeep) × EventsMaxMB at most.
	EventsMaxMB int `yaml:"events_max_mb"`
	EventsKeep  int `yaml:"events_keep"`
}

// Sources configures the policy sources for domains the table does not
// list: DANE (RFC 7672) and MTA-STS (RFC 8461).
type Sources struct {
	DANE   bool `yaml:"dane"`    // needs a DNSSEC-validating probe.resolver (its AD bit is trusted)
	MTASTS bool `yaml:"mta_sts"` // fetch MTA-STS policies
	// Timeout bounds how long a lookup waits for a domain's first DNS and
	// HTTPS work; past it the answer is "no policy known" (or TEMP when
	// DANE records are known to exist) and the work finishes in the
	// background.
	Timeout    time.Duration `yaml:"timeout"`
	HTTPSCA    string        `yaml:"https_ca"`     // extra CA file (PEM) trusted for policy fetches (tests)
	MTASTSPort int           `yaml:"mta_sts_port"` // HTTPS port of mta-sts.<domain> (tests)
	// Cache is a DANE/MTA-STS snapshot of an earlier version, merged into
	// the cache (probe.cache, the one file) at start; "" is sources.json
	// next to probe.cache. With probe.cache "", it is the cache file.
	Cache string `yaml:"cache"`
	// MaxRecords bounds the DANE records kept, and separately the MTA-STS
	// records; past it those expiring first are evicted (an event when
	// one still in force goes).
	MaxRecords int `yaml:"max_records"`
}

// Config is the daemon configuration.
type Config struct {
	Table      string `yaml:"table"`
	Listen     Listen `yaml:"listen"`
	SocketMode string `yaml:"socket_mode"`
	// MaxConnections caps the connections of each of the socketmap and
	// policyd listeners. Postfix opens one per smtp/smtpd process (its
	// default_process_limit is 100), so the default leaves ample room.
	MaxConnections int     `yaml:"max_connections"`
	Probe          Probe   `yaml:"probe"`
	Alerts         Alerts  `yaml:"alerts"`
	Log            Log     `yaml:"log"`
	Sources        Sources `yaml:"sources"`
	// Maillog is Postfix's log to follow for the outbound report, stuck
	// mail alerts and TLS-RPT: a file path (followed across rotation) or
	// "journal" (the systemd journal, mail facility); "" is off.
	Maillog string `yaml:"maillog"`
	TLSRPT  TLSRPT `yaml:"tlsrpt"`
	// SharedCache links the daemons of a fleet through Redis or Valkey
	// (redis://, rediss://, unix://, redis-sentinel://); "" is off.
	SharedCache string `yaml:"shared_cache"`
	// SharedCachePasswordFile holds the password (systemd credentials).
	SharedCachePasswordFile string `yaml:"shared_cache_password_file"`
	// SharedCacheCA is the CA bundle a rediss:// server is verified
	// against ("" uses the system's).
	SharedCacheCA string `yaml:"shared_cache_ca"`
	// SharedCacheCluster names the fleet; daemons share within it only.
	SharedCacheCluster string `yaml:"shared_cache_cluster"`
	// SharedCacheNode names this daemon in the fleet (default: host name).
	SharedCacheNode string `yaml:"shared_cache_node"`
}

// TLSRPT configures the daily SMTP TLS Reporting (RFC 8460) reports sent
// to destination domains that publish a _smtp._tls record. It needs
// Maillog: the reports count what Postfix logged.
type TLSRPT struct {
	Enabled bool `yaml:"enabled"`
	// Organization is the report's organization-name; Contact its
	// contact-info (an address the domain's postmaster can write to).
	Organization string `yaml:"organization"`
	Contact      string `yaml:"contact"`
}

// Default returns the configuration used for every key the file and the
// flags leave unset: the values README.md documents.
func Default() Config {
	return Config{
		Table: "/etc/tlspolicyd/table",
		Listen: Listen{
			Socketmap: "127.0.0.1:10041",
			Policyd:   "127.0.0.1:10042",
			HTTP:      "127.0.0.1:10043",
		},
		SocketMode:     "0660",
		MaxConnections: 1000,
		Probe: Probe{
			Port:           25,
			Timeout:        30 * time.Second,
			Concurrency:    32,
			TTL:            24 * time.Hour,
			Cache:          "/var/lib/tlspolicyd/probes.json",
			Interval:       time.Hour,
			MaxPerMinute:   120,
			MonitorWorkers: 4, MaxEntries: 50000,
		},
		Alerts:  Alerts{SMTP: "127.0.0.1:25", Interval: time.Hour},
		Sources: Sources{DANE: true, MTASTS: true, Timeout: 5 * time.Second, MTASTSPort: 443, MaxRecords: 100000},
		Log: Log{Format: "text", Level: "info", Events: "/var/lib/tlspolicyd/events.jsonl",
			EventsMaxMB: 10, EventsKeep: 3},
	}
}

// Load reads the YAML file at path over the defaults. A missing file is an
// error unless missingOK (e.g. when --table was given on the command line).
// Unknown keys are errors, so a typo cannot silently fall back to a default.
func Load(path string, missingOK bool) (Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			return cfg, nil
		}
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(withGoDurations(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.resolvePaths(filepath.Dir(path))
	if err := cfg.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			if line := keyLine(b, ke.Key); line > 0 {
				return cfg, fmt.Errorf("config %s:%d: %w", path, line, err)
			}
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// resolvePaths makes every relative path of the file relative to dir, the
// file's directory, so that a config reads the same files whatever the
// working directory (systemd starts the daemon in /). Defaults are
// absolute; flags are applied later and stay relative to the working
// directory, as a shell user expects. A new path key belongs here.
func (c *Config) resolvePaths(dir string) {
	for _, p := range []*string{&c.Table, &c.Probe.Cache, &c.Log.Events, &c.SharedCachePasswordFile, &c.SharedCacheCA,
		&c.Sources.Cache, &c.Sources.HTTPSCA} {
		*p = resolvePath(dir, *p)
	}
	if c.Maillog != "journal" {
		c.Maillog = resolvePath(dir, c.Maillog)
	}
	for _, p := range []*string{&c.Listen.Socketmap, &c.Listen.Policyd, &c.Listen.HTTP, &c.Listen.Pprof} {
		if rest, ok := strings.CutPrefix(*p, "unix:"); ok {
			*p = "unix:" + resolvePath(dir, rest)
		}
	}
}

// resolvePath joins a relative path p to dir; "" (off) and absolute paths
// are returned as they are.
func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// KeyError is a configuration value that cannot work. Load prefixes it
// with the file and the line of the key when the value came from the file.
type KeyError struct {
	Key string // dotted path, e.g. "probe.port"
	Msg string // the whole message, starting with Key
}

// Error returns Msg.
func (e *KeyError) Error() string { return e.Msg }

func keyErrorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: key + " " + fmt.Sprintf(format, args...)}
}

// keyLine returns the line of the dotted key in the YAML document b, or 0
// when the document does not set it.
func keyLine(b []byte, key string) int {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line, next = n.Content[i].Line, n.Content[i+1]
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return line
}

// FileMode returns SocketMode parsed as octal permission bits.
func (c Config) FileMode() (fs.FileMode, error) {
	if c.SocketMode == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, keyErrorf("socket_mode", "%q: want octal permission bits such as \"0660\"", c.SocketMode)
	}
	return fs.FileMode(m), nil
}

// Bounds of the event log's rotation settings: a file of up to 64 GiB,
// and up to 1,000 rotated files (each rotation renames every one of them).
const (
	maxEventsMB   = 64 << 10
	maxEventsKeep = 1000
)

// maxSourcesTimeout bounds sources.timeout: the socketmap request timeout
// is raised above it, and Postfix waits 100 s for a socketmap reply.
const maxSourcesTimeout = 60 * time.Second

// Validate reports the first value that cannot work, as a *KeyError.
func (c Config) Validate() error {
	if _, err := c.FileMode(); err != nil {
		return err
	}
	if c.SharedCache != "" {
		u, err := url.Parse(c.SharedCache)
		if err != nil {
			return keyErrorf("shared_cache", "%v", err)
		}
		switch u.Scheme {
		case "redis", "rediss", "unix", "redis-sentinel", "rediss-sentinel":
		default:
			return keyErrorf("shared_cache", "scheme %q: want redis://, rediss://, unix://, redis-sentinel:// or rediss-sentinel://", u.Scheme)
		}
	}
	if strings.ContainsAny(c.SharedCacheCluster, ":*?[] ") {
		return keyErrorf("shared_cache_cluster", "%q: no ':', spaces or glob characters", c.SharedCacheCluster)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return keyErrorf("log.format", "%q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return keyErrorf("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	if f := c.Alerts.From; f != "" && !validMailbox(f) {
		return keyErrorf("alerts.from", "%q: want an address local@domain.example, without spaces or angle brackets", f)
	}
	if c.Log.EventsMaxMB < 1 || c.Log.EventsMaxMB > maxEventsMB {
		return keyErrorf("log.events_max_mb", "%d: want 1-%d (MiB)", c.Log.EventsMaxMB, maxEventsMB)
	}
	if c.Log.EventsKeep < 1 || c.Log.EventsKeep > maxEventsKeep {
		return keyErrorf("log.events_keep", "%d: want 1-%d", c.Log.EventsKeep, maxEventsKeep)
	}
	if c.MaxConnections < 1 {
		return keyErrorf("max_connections", "%d: want at least 1", c.MaxConnections)
	}
	if c.Probe.Port < 1 || c.Probe.Port > 65535 {
		return keyErrorf("probe.port", "%d: want 1-65535", c.Probe.Port)
	}
	if c.Probe.Concurrency < 1 {
		return keyErrorf("probe.concurrency", "%d: want at least 1", c.Probe.Concurrency)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"probe.timeout", c.Probe.Timeout}, {"probe.ttl", c.Probe.TTL}, {"probe.interval", c.Probe.Interval}, {"alerts.interval", c.Alerts.Interval}} {
		if d.v <= 0 {
			return keyErrorf(d.key, "%v: want a positive duration such as 30s, 24h or 7d", d.v)
		}
	}
	if c.Sources.Timeout <= 0 || c.Sources.Timeout > maxSourcesTimeout {
		return keyErrorf("sources.timeout", "%v: want a positive duration up to %v", c.Sources.Timeout, maxSourcesTimeout)
	}
	if c.Sources.MTASTSPort < 1 || c.Sources.MTASTSPort > 65535 {
		return keyErrorf("sources.mta_sts_port", "%d: want 1-65535", c.Sources.MTASTSPort)
	}
	if c.Probe.MaxPerMinute < 0 {
		return keyErrorf("probe.max_per_minute", "%d: want 0 (no cap) or more", c.Probe.MaxPerMinute)
	}
	if c.Probe.MonitorWorkers < 1 {
		return keyErrorf("probe.monitor_workers", "%d: want at least 1", c.Probe.MonitorWorkers)
	}
	if c.Probe.MaxEntries < 1 {
		return keyErrorf("probe.max_entries", "%d: want at least 1", c.Probe.MaxEntries)
	}
	if c.Sources.MaxRecords < 1 {
		return keyErrorf("sources.max_records", "%d: want at least 1", c.Sources.MaxRecords)
	}
	return nil
}

// validMailbox reports whether a looks like an address an SMTP relay takes
// in MAIL FROM and a From: header: local@domain, printable ASCII, no
// spaces, angle brackets or quotes, the domain with a dot.
func validMailbox(a string) bool {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" || !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return false
	}
	for _, r := range a {
		if r <= ' ' || r > '~' || strings.ContainsRune("<>\"(),;:[]", r) {
			return false
		}
	}
	return !strings.Contains(domain, "@")
}

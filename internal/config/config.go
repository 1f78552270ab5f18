// Package config reads the daemon configuration (DESIGN §3): a YAML file
// whose every key also has a command-line flag; a flag wins over the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Listen holds the listener addresses ("host:port", "[::1]:port" or
// "unix:/path"; "" disables the listener).
type Listen struct {
	Socketmap string `yaml:"socketmap"`
	Policyd   string `yaml:"policyd"`
	HTTP      string `yaml:"http"`
}

// Probe configures the STARTTLS prober.
type Probe struct {
	Resolver     string        `yaml:"resolver"`
	Port         int           `yaml:"port"`
	Timeout      time.Duration `yaml:"timeout"`
	Concurrency  int           `yaml:"concurrency"`
	TTL          time.Duration `yaml:"ttl"`
	Cache        string        `yaml:"cache"`
	HELO         string        `yaml:"helo"`
	AllowPrivate bool          `yaml:"allow_private"`
	// Interval is how often every enforced and testing outbound entry is
	// re-probed (jittered by ±10%).
	Interval time.Duration `yaml:"interval"`
}

// Alerts configures alert delivery.
type Alerts struct {
	MailTo   string        `yaml:"mail_to"`
	SMTP     string        `yaml:"smtp"`
	Webhook  string        `yaml:"webhook"`
	Interval time.Duration `yaml:"interval"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
	// Events is the append-only JSON-lines event log (rotated by size,
	// read back at start so a restart loses no event); "" disables it.
	Events string `yaml:"events"`
}

// Config is the daemon configuration.
type Config struct {
	Table      string `yaml:"table"`
	Listen     Listen `yaml:"listen"`
	SocketMode string `yaml:"socket_mode"`
	// MaxConnections caps the connections of each of the socketmap and
	// policyd listeners. Postfix opens one per smtp/smtpd process (its
	// default_process_limit is 100), so the default leaves ample room.
	MaxConnections int    `yaml:"max_connections"`
	Probe          Probe  `yaml:"probe"`
	Alerts         Alerts `yaml:"alerts"`
	Log            Log    `yaml:"log"`
}

// Default returns the configuration used for every key the file and the
// flags leave unset: the values documented in DESIGN §3.
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
			Port:        25,
			Timeout:     30 * time.Second,
			Concurrency: 32,
			TTL:         24 * time.Hour,
			Cache:       "/var/lib/tlspolicyd/probes.json",
			Interval:    time.Hour,
		},
		Alerts: Alerts{SMTP: "127.0.0.1:25", Interval: time.Hour},
		Log:    Log{Format: "text", Level: "info", Events: "/var/lib/tlspolicyd/events.jsonl"},
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
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// FileMode returns SocketMode parsed as octal permission bits.
func (c Config) FileMode() (fs.FileMode, error) {
	if c.SocketMode == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("socket_mode %q: want octal permission bits such as \"0660\"", c.SocketMode)
	}
	return fs.FileMode(m), nil
}

// Validate reports the first value that cannot work.
func (c Config) Validate() error {
	if _, err := c.FileMode(); err != nil {
		return err
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.MaxConnections < 1 {
		return fmt.Errorf("max_connections %d: want at least 1", c.MaxConnections)
	}
	if c.Probe.Port < 1 || c.Probe.Port > 65535 {
		return fmt.Errorf("probe.port %d: want 1-65535", c.Probe.Port)
	}
	if c.Probe.Concurrency < 1 {
		return fmt.Errorf("probe.concurrency %d: want at least 1", c.Probe.Concurrency)
	}
	if c.Probe.Timeout <= 0 || c.Probe.TTL <= 0 || c.Probe.Interval <= 0 {
		return errors.New("probe.timeout, probe.ttl and probe.interval must be positive durations such as 30s or 24h")
	}
	return nil
}

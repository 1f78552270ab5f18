package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name      string
		path      string
		missingOK bool
		check     func(Config) bool
		err       string
	}{
		{"defaults without a file", "", false, func(c Config) bool {
			return c.Listen.Socketmap == "127.0.0.1:10041" && c.Probe.Port == 25 && c.Probe.Timeout == 30*time.Second && c.MaxConnections == 1000
		}, ""},
		{"missing file allowed", filepath.Join(dir, "nope.yaml"), true, func(c Config) bool { return c.Table == "/etc/tlspolicyd/table" }, ""},
		{"missing file refused", filepath.Join(dir, "nope.yaml"), false, nil, "no such file"},
		{"values over defaults", write("a.yaml", "table: /t\nlisten:\n  policyd: \"\"\nprobe:\n  timeout: 5s\n  allow_private: true\n"), false, func(c Config) bool {
			return c.Table == "/t" && c.Listen.Policyd == "" && c.Listen.Socketmap == "127.0.0.1:10041" && c.Probe.Timeout == 5*time.Second && c.Probe.AllowPrivate
		}, ""},
		{"unknown key is an error", write("b.yaml", "listen:\n  socketmapp: 1.2.3.4:1\n"), false, nil, "socketmapp"},
		{"bad socket mode", write("c.yaml", "socket_mode: \"0999\"\n"), false, nil, "socket_mode"},
		{"bad log format", write("d.yaml", "log: {format: xml}\n"), false, nil, "log.format"},
		{"bad duration", write("e.yaml", "probe: {ttl: soon}\n"), false, nil, "line 1: cannot unmarshal !!str `soon` into time.Duration"},
		// One duration syntax everywhere: days as in the table and report --since.
		{"durations in days", write("days-a.yaml", "probe:\n  ttl: 1d\n  interval: \"1d12h\"\nalerts: {interval: 7d}\n"), false, func(c Config) bool {
			return c.Probe.TTL == 24*time.Hour && c.Probe.Interval == 36*time.Hour && c.Alerts.Interval == 7*24*time.Hour
		}, ""},
		{"days keep error lines", write("days-b.yaml", "probe:\n  ttl: 30d\n  bogus: 1\n"), false, nil, "line 3: field bogus not found"},
		{"bad days", write("days-c.yaml", "probe:\n  ttl: 3xd\n"), false, nil, "line 2: cannot unmarshal !!str `3xd` into time.Duration"},
		{"empty file is defaults", write("f.yaml", ""), false, func(c Config) bool {
			return c.Probe.Concurrency == 32 && c.Probe.MaxPerMinute == 120 && c.Probe.MonitorWorkers == 4 && c.Listen.Pprof == ""
		}, ""},
		{"probe rate, monitor workers, pprof", write("g.yaml", "listen:\n  pprof: 127.0.0.1:6060\nprobe:\n  max_per_minute: 600\n  monitor_workers: 8\n"), false, func(c Config) bool {
			return c.Probe.MaxPerMinute == 600 && c.Probe.MonitorWorkers == 8 && c.Listen.Pprof == "127.0.0.1:6060"
		}, ""},
		{"max_per_minute 0 is no cap", write("h.yaml", "probe:\n  max_per_minute: 0\n"), false, func(c Config) bool { return c.Probe.MaxPerMinute == 0 }, ""},
		{"negative max_per_minute names file and line", write("i.yaml", "table: /t\nprobe:\n  port: 25\n  max_per_minute: -5\n"), false, nil,
			"i.yaml:4: probe.max_per_minute -5: want 0 (no cap) or more"},
		{"monitor_workers 0 names file and line", write("j.yaml", "probe: {monitor_workers: 0}\n"), false, nil,
			"j.yaml:1: probe.monitor_workers 0: want at least 1"},
		{"negative monitor_workers", write("k.yaml", "probe:\n\n  monitor_workers: -1\n"), false, nil, "k.yaml:3: probe.monitor_workers -1"},
		{"bad port names file and line", write("l.yaml", "probe:\n  port: 0\n"), false, nil, "l.yaml:2: probe.port 0: want 1-65535"},
		{"zero interval names file and line", write("m.yaml", "probe:\n  interval: 0s\n"), false, nil, "m.yaml:2: probe.interval 0s: want a positive duration"},
		{"event log rotation defaults", "", false, func(c Config) bool { return c.Log.EventsMaxMB == 10 && c.Log.EventsKeep == 3 }, ""},
		{"event log rotation", write("n.yaml", "log:\n  events_max_mb: 100\n  events_keep: 30\n"), false, func(c Config) bool {
			return c.Log.EventsMaxMB == 100 && c.Log.EventsKeep == 30 && c.Log.Events == "/var/lib/tlspolicyd/events.jsonl"
		}, ""},
		{"events_max_mb 0 names file and line", write("o.yaml", "log:\n  events_max_mb: 0\n"), false, nil, "o.yaml:2: log.events_max_mb 0: want 1-65536 (MiB)"},
		{"events_keep 0 names file and line", write("p.yaml", "log: {events_keep: 0}\n"), false, nil, "p.yaml:1: log.events_keep 0: want 1-1000"},
		{"events_keep too many", write("q.yaml", "log: {events_keep: 1001}\n"), false, nil, "log.events_keep 1001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.path, tt.missingOK)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("config = %+v", c)
			}
		})
	}
}

func TestFileMode(t *testing.T) {
	c := Default()
	if m, err := c.FileMode(); err != nil || m != 0o660 {
		t.Errorf("FileMode = %o, %v", m, err)
	}
}

// TestValidateNamesTheKey: a value set by a flag (not the file) is
// reported by key, so serve can say which flag or key to fix.
func TestValidateNamesTheKey(t *testing.T) {
	for _, tt := range []struct {
		set  func(*Config)
		key  string
		text string
	}{
		{func(c *Config) { c.Probe.MaxPerMinute = -1 }, "probe.max_per_minute", "probe.max_per_minute -1: want 0 (no cap) or more"},
		{func(c *Config) { c.Probe.MonitorWorkers = 0 }, "probe.monitor_workers", "probe.monitor_workers 0: want at least 1"},
		{func(c *Config) { c.MaxConnections = 0 }, "max_connections", "max_connections 0: want at least 1"},
		{func(c *Config) { c.Log.EventsMaxMB = 1 << 20 }, "log.events_max_mb", "log.events_max_mb 1048576: want 1-65536 (MiB)"},
		{func(c *Config) { c.Log.EventsKeep = -1 }, "log.events_keep", "log.events_keep -1: want 1-1000"},
		{func(c *Config) { c.SocketMode = "rw" }, "socket_mode", `socket_mode "rw": want octal permission bits such as "0660"`},
		{func(c *Config) { c.Alerts.Interval = 0 }, "alerts.interval", "alerts.interval 0s: want a positive duration such as 30s, 24h or 7d"},
	} {
		c := Default()
		tt.set(&c)
		err := c.Validate()
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != tt.key || err.Error() != tt.text {
			t.Errorf("Validate = %v (%#v), want key %s: %q", err, ke, tt.key, tt.text)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

// TestExampleConfig: the shipped example loads and sets what it shows.
func TestExampleConfig(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "examples", "tlspolicyd.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.Pprof != "" || c.Probe.MaxPerMinute != 120 || c.Probe.MonitorWorkers != 4 || c.Listen.Socketmap != "127.0.0.1:10041" ||
		c.Log.EventsMaxMB != 10 || c.Log.EventsKeep != 3 {
		t.Errorf("example config = %+v", c)
	}
	if want := filepath.Join("..", "..", "examples", "table"); c.Table != want {
		t.Errorf("example table = %q, want %q (relative to the config file)", c.Table, want)
	}
}

// TestRelativePaths: a relative path in the file is read against the file's
// directory, not the working directory; absolute paths, "" and host:port
// listeners stay as written.
func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tlspolicyd.yaml")
	doc := `table: table
listen:
  socketmap: unix:run/socketmap.sock
  policyd: 127.0.0.1:10042
  http: unix:/run/tlspolicyd/http.sock
  pprof: ""
probe:
  cache: state/probes.json
log:
  events: /var/log/events.jsonl
sources:
  cache: sources.json
  https_ca: ca.pem
maillog: log/mail.log
`
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // the working directory must not matter
	c, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []struct{ name, got, want string }{
		{"table", c.Table, filepath.Join(dir, "table")},
		{"listen.socketmap", c.Listen.Socketmap, "unix:" + filepath.Join(dir, "run/socketmap.sock")},
		{"listen.policyd", c.Listen.Policyd, "127.0.0.1:10042"},
		{"listen.http", c.Listen.HTTP, "unix:/run/tlspolicyd/http.sock"},
		{"listen.pprof", c.Listen.Pprof, ""},
		{"probe.cache", c.Probe.Cache, filepath.Join(dir, "state/probes.json")},
		{"log.events", c.Log.Events, "/var/log/events.jsonl"},
		{"sources.cache", c.Sources.Cache, filepath.Join(dir, "sources.json")},
		{"sources.https_ca", c.Sources.HTTPSCA, filepath.Join(dir, "ca.pem")},
		{"maillog", c.Maillog, filepath.Join(dir, "log/mail.log")},
	} {
		if got.got != got.want {
			t.Errorf("%s = %q, want %q", got.name, got.got, got.want)
		}
	}

	// A relative --config path: the file's directory is still the base.
	t.Chdir(filepath.Dir(dir))
	c, err = Load(filepath.Join(filepath.Base(dir), "tlspolicyd.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Base(dir), "table"); c.Table != want {
		t.Errorf("with a relative --config, table = %q, want %q", c.Table, want)
	}

	// maillog: journal is a source, not a file.
	if err := os.WriteFile(path, []byte("maillog: journal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err = Load(path, false); err != nil || c.Maillog != "journal" {
		t.Errorf("maillog: journal = %q, %v; want journal", c.Maillog, err)
	}
}

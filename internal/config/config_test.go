package config

import (
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
		{"empty file is defaults", write("f.yaml", ""), false, func(c Config) bool { return c.Probe.Concurrency == 32 }, ""},
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

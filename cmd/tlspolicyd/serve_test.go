package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
)

// startServe runs `tlspolicyd serve args...` in this process until the
// test ends and returns the address each server logged it listens on.
func startServe(t *testing.T, servers []string, args ...string) map[string]string {
	t.Helper()
	log := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- newApp(io.Discard, log).RunContext(ctx, append([]string{"tlspolicyd", "serve"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15 s of its context ending")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log.String())
		}
	})
	addrs := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	for len(addrs) < len(servers) {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers %v not all listening within 20 s:\n%s", servers, log.String())
		}
		for _, name := range servers {
			re := regexp.MustCompile(`msg=listening server=` + name + ` addr=(\S+)`)
			if m := re.FindStringSubmatch(log.String()); m != nil {
				addrs[name] = m[1]
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return addrs
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// TestServePprof: --pprof serves the Go profiles on a listener of its own
// (a CPU profile, the heap, the command line); the public HTTP listener
// serves none of them.
func TestServePprof(t *testing.T) {
	addrs := startServe(t, []string{"socketmap", "http", "pprof"},
		"--table", "testdata/table", "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "127.0.0.1:0",
		"--pprof", "127.0.0.1:0", "--probe-cache", "", "--event-log", "", "--resolver", "127.0.0.1:1")
	pp, pub := "http://"+addrs["pprof"], "http://"+addrs["http"]
	if addrs["pprof"] == addrs["http"] {
		t.Fatalf("pprof shares the HTTP listener %s", addrs["http"])
	}

	code, body := get(t, pp+"/debug/pprof/cmdline")
	if code != http.StatusOK || string(body) != strings.Join(os.Args, "\x00") {
		t.Errorf("cmdline: %d %q, want this process's arguments", code, body)
	}
	code, body = get(t, pp+"/debug/pprof/profile?seconds=1")
	if code != http.StatusOK {
		t.Fatalf("CPU profile: %d %s", code, body)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("CPU profile is not a gzipped profile: %v", err)
	}
	if raw, err := io.ReadAll(zr); err != nil || len(raw) == 0 {
		t.Errorf("CPU profile: %d bytes, %v", len(raw), err)
	}
	code, body = get(t, pp+"/debug/pprof/heap?debug=1")
	if code != http.StatusOK || !bytes.HasPrefix(body, []byte("heap profile: ")) {
		t.Errorf("heap: %d %.80q", code, body)
	}
	code, body = get(t, pp+"/debug/pprof/allocs?debug=1")
	if code != http.StatusOK || !bytes.Contains(body, []byte("# runtime.MemStats")) {
		t.Errorf("allocs: %d %.80q", code, body)
	}

	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := get(t, pub+path); code != http.StatusNotFound {
			t.Errorf("public listener: GET %s = %d, want 404", path, code)
		}
	}
	if code, _ := get(t, pp+"/healthz"); code != http.StatusNotFound {
		t.Errorf("pprof listener: GET /healthz = %d, want 404 (profiles only)", code)
	}
}

// TestServeWithoutPprof: no pprof listener unless asked for.
func TestServeWithoutPprof(t *testing.T) {
	addrs := startServe(t, []string{"http"},
		"--table", "testdata/table", "--socketmap", "", "--policyd", "", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--event-log", "", "--resolver", "127.0.0.1:1")
	if code, _ := get(t, "http://"+addrs["http"]+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ = %d on the public listener", code)
	}
}

func TestLocalAddr(t *testing.T) {
	for _, tt := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6060}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 6060}, true},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 6060}, false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 6060}, false},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 6060}, false},
		{&net.UnixAddr{Name: "/run/tlspolicyd/pprof.sock", Net: "unix"}, true},
	} {
		if got := localAddr(tt.addr); got != tt.want {
			t.Errorf("localAddr(%v) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestServeEventLogRotation: --event-log-max-mb and --event-log-keep bound
// the event history on disk. Blocked policy requests (the table's
// bank-partners rule, no TLS) fill a 1 MiB log several times over; the log
// rotates at 1 MiB and keeps two rotated files, the oldest dropped.
func TestServeEventLogRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 12,000 policy requests")
	}
	dir := t.TempDir()
	evlog := filepath.Join(dir, "events.jsonl")
	addrs := startServe(t, []string{"policyd"},
		"--table", "testdata/table", "--socketmap", "", "--policyd", "127.0.0.1:0", "--http", "",
		"--probe-cache", "", "--resolver", "127.0.0.1:1",
		"--event-log", evlog, "--event-log-max-mb", "1", "--event-log-keep", "2")
	conn, err := net.Dial("tcp", addrs["policyd"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// About 400 bytes an event: 12,000 events are over 4 MiB.
	sender := strings.Repeat("x", 200) + "@bank.example"
	for i := range 12_000 {
		req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\ninstance=%d\nsender=%s\nrecipient=u@ourcorp.example\nclient_address=192.0.2.1\nclient_name=mx.bank.example\n\n", i, sender)
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "action=450 ") {
			t.Fatalf("request %d: reply %q, %v; want a deferral", i, line, err)
		}
		if blank, err := r.ReadString('\n'); err != nil || blank != "\n" {
			t.Fatalf("request %d: reply not ended by an empty line: %q, %v", i, blank, err)
		}
	}
	// The event log writes within milliseconds; its rotations are in order.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(evlog + ".2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s.2 not written within 10 s", evlog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(evlog + ".3"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.3: %v; want only two rotated files kept", evlog, err)
	}
	for _, name := range []string{evlog, evlog + ".1", evlog + ".2"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 1<<20 {
			t.Errorf("%s: %d bytes, over the 1 MiB rotation size", name, fi.Size())
		}
		if name != evlog && fi.Size() < 1<<19 {
			t.Errorf("%s: %d bytes; a rotated file should be near 1 MiB", name, fi.Size())
		}
	}
}

// yamlKeys returns the dotted YAML path of every leaf of t (config.Config).
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		key := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, yamlKeys(f.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// configField returns the field of cfg at the dotted YAML path key.
func configField(t *testing.T, cfg *config.Config, key string) reflect.Value {
	t.Helper()
	v := reflect.ValueOf(cfg).Elem()
next:
	for _, part := range strings.Split(key, ".") {
		for i := range v.NumField() {
			if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == part {
				v = v.Field(i)
				continue next
			}
		}
		t.Fatalf("config.Config has no key %q", key)
	}
	return v
}

// loadServeConfig runs `tlspolicyd serve args...` as far as loadConfig.
func loadServeConfig(t *testing.T, args ...string) (config.Config, error) {
	t.Helper()
	cmd := serveCommand()
	var cfg config.Config
	var loadErr error
	cmd.Action = func(c *cli.Context) error {
		cfg, loadErr = loadConfig(c)
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard}
	if err := app.Run(append([]string{"tlspolicyd", "serve"}, args...)); err != nil {
		t.Fatalf("serve %v: %v", args, err)
	}
	return cfg, loadErr
}

// TestEveryConfigKeyHasAFlag (README, "Daemon configuration"): every key of
// config.Config has a keyFlags entry, and its flag is one of serve's. A key
// added without a flag fails here.
func TestEveryConfigKeyHasAFlag(t *testing.T) {
	flags := map[string]bool{}
	for _, f := range serveCommand().Flags {
		for _, n := range f.Names() {
			flags[n] = true
		}
	}
	bound := map[string]string{}
	for _, kf := range keyFlags() {
		if _, dup := bound[kf.key]; dup {
			t.Errorf("key %s bound twice", kf.key)
		}
		bound[kf.key] = kf.flag
		if !flags[kf.flag] {
			t.Errorf("key %s: serve has no flag --%s", kf.key, kf.flag)
		}
	}
	keys := yamlKeys(reflect.TypeOf(config.Config{}), "")
	for _, k := range keys {
		if bound[k] == "" {
			t.Errorf("config key %s has no flag: add it to keyFlags and to serve's flags", k)
		}
	}
	if len(bound) != len(keys) {
		t.Errorf("keyFlags binds %d keys, config.Config has %d: %v", len(bound), len(keys), keys)
	}
}

// TestServeFlagsOverrideConfig: each key set in the config file takes
// effect, and its flag, set too, wins over the file.
func TestServeFlagsOverrideConfig(t *testing.T) {
	tests := []struct {
		key, flag string
		file      string // the key's YAML value in the config file
		arg       string // the flag's value
		want      any
	}{
		{"table", "table", "/file/table", "/flag/table", "/flag/table"},
		{"listen.socketmap", "socketmap", "127.0.0.1:1", "unix:/run/s.sock", "unix:/run/s.sock"},
		{"listen.policyd", "policyd", "127.0.0.1:2", "", ""},
		{"listen.http", "http", "127.0.0.1:3", "[::1]:4", "[::1]:4"},
		{"listen.pprof", "pprof", "127.0.0.1:5", "127.0.0.1:6060", "127.0.0.1:6060"},
		{"socket_mode", "socket-mode", `"0640"`, "0600", "0600"},
		{"max_connections", "max-connections", "10", "20", 20},
		{"probe.resolver", "resolver", "127.0.0.1:53", "[::1]:5353", "[::1]:5353"},
		{"probe.port", "probe-port", "2525", "2526", 2526},
		{"probe.timeout", "probe-timeout", "5s", "7s", 7 * time.Second},
		{"probe.concurrency", "probe-concurrency", "8", "16", 16},
		{"probe.ttl", "probe-ttl", "1h", "2h", 2 * time.Hour},
		{"probe.cache", "probe-cache", "/file/probes.json", "/flag/probes.json", "/flag/probes.json"},
		{"probe.helo", "helo", "file.example", "flag.example", "flag.example"},
		{"probe.allow_private", "allow-private", "true", "false", false},
		{"probe.interval", "probe-interval", "10m", "20m", 20 * time.Minute},
		{"probe.max_per_minute", "probe-max-per-minute", "60", "0", 0},
		{"probe.monitor_workers", "probe-monitor-workers", "2", "8", 8},
		{"probe.max_entries", "probe-max-entries", "100", "200", 200},
		{"alerts.mail_to", "alert-mail-to", "a@file.example", "postmaster@flag.example", "postmaster@flag.example"},
		{"alerts.smtp", "alert-smtp", "127.0.0.1:2525", "[::1]:25", "[::1]:25"},
		{"alerts.webhook", "alert-webhook", "https://file.example/hook", "https://flag.example/hook", "https://flag.example/hook"},
		{"alerts.interval", "alert-interval", "2h", "30m", 30 * time.Minute},
		{"alerts.from", "alert-from", "alerts@file.example", "tlspolicyd@mx1.flag.example", "tlspolicyd@mx1.flag.example"},
		{"log.format", "log-format", "json", "text", "text"},
		{"log.level", "log-level", "debug", "warn", "warn"},
		{"log.events", "event-log", "/file/events.jsonl", "", ""},
		{"log.events_max_mb", "event-log-max-mb", "5", "20", 20},
		{"log.events_keep", "event-log-keep", "2", "7", 7},
		{"sources.dane", "dane", "false", "true", true},
		{"sources.mta_sts", "mta-sts", "false", "true", true},
		{"sources.timeout", "sources-timeout", "2s", "3s", 3 * time.Second},
		{"sources.https_ca", "https-ca", "/file/ca.pem", "/flag/ca.pem", "/flag/ca.pem"},
		{"sources.mta_sts_port", "mta-sts-port", "8443", "9443", 9443},
		{"sources.cache", "sources-cache", "/file/sources.json", "/flag/sources.json", "/flag/sources.json"},
		{"sources.max_records", "sources-max-records", "1000", "2000", 2000},
		{"maillog", "maillog", "/var/log/mail.log", "journal", "journal"},
		{"tlsrpt.enabled", "tlsrpt", "true", "false", false},
		{"tlsrpt.organization", "tlsrpt-organization", "File Corp", "Flag Corp", "Flag Corp"},
		{"tlsrpt.contact", "tlsrpt-contact", "tlsrpt@file.example", "tlsrpt@flag.example", "tlsrpt@flag.example"},
		{"shared_cache", "shared-cache", "redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "rediss://cache.example:6380/1"},
		{"shared_cache_password_file", "shared-cache-password-file", "/file/pw", "/flag/pw", "/flag/pw"},
		{"shared_cache_ca", "shared-cache-ca", "/file/ca.pem", "/flag/ca.pem", "/flag/ca.pem"},
		{"shared_cache_cluster", "shared-cache-cluster", "a", "b", "b"},
		{"shared_cache_node", "shared-cache-node", "mx1", "mx2", "mx2"},
	}
	flagOf := map[string]string{}
	for _, kf := range keyFlags() {
		flagOf[kf.key] = kf.flag
	}
	covered := map[string]bool{}
	dir := t.TempDir()
	for _, tt := range tests {
		covered[tt.key] = true
		t.Run(tt.key, func(t *testing.T) {
			if flagOf[tt.key] != tt.flag {
				t.Fatalf("key %s: flag --%s, want --%s", tt.key, flagOf[tt.key], tt.flag)
			}
			yml := tt.key + ": " + tt.file + "\n"
			if section, key, ok := strings.Cut(tt.key, "."); ok {
				yml = section + ":\n  " + key + ": " + tt.file + "\n"
			}
			path := filepath.Join(dir, strings.ReplaceAll(tt.key, ".", "_")+".yaml")
			if err := os.WriteFile(path, []byte(yml), 0o644); err != nil {
				t.Fatal(err)
			}
			def := config.Default()
			cfg, err := loadServeConfig(t, "--config", path)
			if err != nil {
				t.Fatal(err)
			}
			if got := configField(t, &cfg, tt.key).Interface(); got == configField(t, &def, tt.key).Interface() {
				t.Fatalf("file alone: %s = %v, the default: the file value %s did not take", tt.key, got, tt.file)
			}
			cfg, err = loadServeConfig(t, "--config", path, "--"+tt.flag+"="+tt.arg)
			if err != nil {
				t.Fatal(err)
			}
			if got := configField(t, &cfg, tt.key).Interface(); got != tt.want {
				t.Errorf("--%s=%s over %s: %s = %v (%T), want %v (%T)", tt.flag, tt.arg, tt.file, tt.key, got, got, tt.want, tt.want)
			}
		})
	}
	for _, k := range yamlKeys(reflect.TypeOf(config.Config{}), "") {
		if !covered[k] {
			t.Errorf("key %s: no test case", k)
		}
	}
}

// TestServeFlagValidated: a value set by a flag is validated like one from
// the file, and the error names the flag.
func TestServeFlagValidated(t *testing.T) {
	for _, tt := range []struct{ arg, want string }{
		{"--probe-concurrency=0", "--probe-concurrency: probe.concurrency 0: want at least 1"},
		{"--probe-timeout=0s", "--probe-timeout: probe.timeout 0s: want a positive duration"},
		{"--probe-monitor-workers=-1", "--probe-monitor-workers: probe.monitor_workers -1: want at least 1"},
		{"--alert-interval=-1h", "--alert-interval: alerts.interval -1h0m0s: want a positive duration"},
		{"--log-level=loud", `--log-level: log.level "loud": want debug, info, warn or error`},
		{"--alert-from=tlspolicyd@mailhost", `--alert-from: alerts.from "tlspolicyd@mailhost": want an address local@domain.example`},
		{"--sources-timeout=0s", "--sources-timeout: sources.timeout 0s: want a positive duration"},
		{"--mta-sts-port=0", "--mta-sts-port: sources.mta_sts_port 0: want 1-65535"},
		{"--sources-max-records=0", "--sources-max-records: sources.max_records 0: want at least 1"},
		{"--probe-max-entries=0", "--probe-max-entries: probe.max_entries 0: want at least 1"},
	} {
		_, err := loadServeConfig(t, "--table", "testdata/table", tt.arg)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.arg, err, tt.want)
		}
	}
}

// TestServeFlagDefaults: the default each serve flag's help shows is the
// configuration's (config.Default); a zero default is explained by the
// flag's own text ("none", "this host's name").
func TestServeFlagDefaults(t *testing.T) {
	byName := map[string]cli.Flag{}
	for _, f := range serveCommand().Flags {
		byName[f.Names()[0]] = f
	}
	def := config.Default()
	for _, kf := range keyFlags() {
		v := reflect.ValueOf(kf.dst(&def)).Elem()
		if v.IsZero() {
			continue
		}
		want := fmt.Sprint(v.Interface())
		if d, ok := v.Interface().(time.Duration); ok { // 24h, not 24h0m0s
			want = d.String()
			if strings.HasSuffix(want, "m0s") {
				want = strings.TrimSuffix(want, "0s")
			}
			if strings.HasSuffix(want, "h0m") {
				want = strings.TrimSuffix(want, "0m")
			}
		}
		f, ok := byName[kf.flag].(cli.DocGenerationFlag)
		if !ok {
			t.Errorf("--%s: no such serve flag", kf.flag)
			continue
		}
		if got := f.GetDefaultText(); got != want {
			t.Errorf("--%s: help shows default %q, want %q (config.Default's %s)", kf.flag, got, want, kf.key)
		}
	}
}

// TestServeReloadAppliesLearnMaxAge: a table reload that shortens
// defaults.learn_max_age un-learns, at once, a domain confirmed longer ago.
func TestServeReloadAppliesLearnMaxAge(t *testing.T) {
	dir := t.TempDir()
	table := filepath.Join(dir, "table.yaml")
	writeTable := func(maxAge string) {
		t.Helper()
		tmp := table + ".tmp"
		body := "defaults:\n  learn: enforce\n  learn_max_age: " + maxAge + "\noutbound:\n  other.example: verify\n"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, table); err != nil { // as an editor or git checkout does
			t.Fatal(err)
		}
	}
	writeTable("720h")
	// tls.example: STARTTLS last confirmed 10 days ago.
	confirmed := time.Now().Add(-10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	cachePath := filepath.Join(dir, "probes.json")
	cacheFile := `{"version": 1, "learned": [{"domain": "tls.example", "first_learned": "` + confirmed + `", "last_confirmed": "` + confirmed + `"}]}`
	if err := os.WriteFile(cachePath, []byte(cacheFile), 0o644); err != nil {
		t.Fatal(err)
	}
	addrs := startServe(t, []string{"socketmap"},
		"--table", table, "--socketmap", "127.0.0.1:0", "--policyd", "", "--http", "",
		"--probe-cache", cachePath, "--event-log", "", "--resolver", "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := socketmap.Dial(ctx, addrs["socketmap"], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	lookup := func() socketmap.Reply {
		t.Helper()
		r, err := cl.Lookup(ctx, "tls_policy", "tls.example")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := lookup(); r.Status != socketmap.StatusOK || r.Data != "encrypt" {
		t.Fatalf("learn_max_age 720h: tls.example = %v %q, want the learned encrypt", r.Status, r.Data)
	}

	writeTable("48h")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := lookup()
		if r.Status == socketmap.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("learn_max_age 48h reloaded: tls.example = %v %q, want NOTFOUND (confirmed 10 days ago)", r.Status, r.Data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The event log's and the alerter's counters are exported (at 0 here:
// nothing dropped, the first alert waits for alert's one-minute gathering).
func TestServeMetricsOfEventLogAndAlerts(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close) // after serve's cleanup: its shutdown delivers the alert
	dir := t.TempDir()
	addrs := startServe(t, []string{"policyd", "http"},
		"--table", "testdata/table", "--socketmap", "", "--policyd", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--probe-cache", "", "--resolver", "127.0.0.1:1", "--event-log", filepath.Join(dir, "events.jsonl"),
		"--alert-webhook", hook.URL)
	conn, err := net.Dial("tcp", addrs["policyd"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@bank.example\nrecipient=u@ourcorp.example\nclient_address=192.0.2.1\nclient_name=mx.bank.example\n\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "action=450 ") {
		t.Fatalf("reply %q, %v; want a deferral", line, err)
	}
	_, body := get(t, "http://"+addrs["http"]+"/metrics")
	for _, w := range []string{"tlspolicyd_alerts_sent_total 0", "tlspolicyd_alerts_failed_total 0", "tlspolicyd_alerts_dropped_total 0",
		"tlspolicyd_alerts_suppressed_total 0", "tlspolicyd_event_log_dropped_total 0", "tlspolicyd_prober_blind 0", "tlspolicyd_event_log_write_errors_total 0",
		"# TYPE tlspolicyd_alerts_sent_total counter", "# TYPE tlspolicyd_event_log_dropped_total counter"} {
		if !strings.Contains(string(body), "\n"+w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

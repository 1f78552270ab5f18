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
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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

package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseFlags checks the flags others' scripts use still parse, what
// -quick and -profile imply, and which combinations are refused.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(t *testing.T, o options)
	}{
		{name: "every existing flag", args: []string{"-d", "2s", "-c", "1,8", "-entries", "1000", "-rules", "10", "-mem-entries", "0",
			"-lookups", "10", "-steps", "load,mem", "-kinds=false", "-floor=false", "-rounds", "5", "-unmet", "0", "-reload-d", "2s", "-redis", "x", "-seed", "3", "-work", "/tmp/w", "-keep",
			"-cpuprofile", "c.prof", "-memprofile", "m.prof", "-heapprofile", "h.prof"},
			check: func(t *testing.T, o options) {
				if o.dur != 2*time.Second || len(o.conns) != 2 || o.entries != 1000 || o.memEntries != 0 || o.categories ||
					!o.steps["load"] || o.steps["reload"] || o.cpuProfile != "c.prof" || o.profileStep != nil || !o.keep || o.rounds != 5 || o.unmet != 0 || o.floor {
					t.Errorf("options %+v", o)
				}
			}},
		{name: "defaults", args: nil,
			check: func(t *testing.T, o options) {
				if o.dur != 5*time.Second || o.entries != 100_000 || o.rules != 10_000 || o.memEntries != 1_000_000 || !o.categories ||
					!slices.Equal(o.conns, []int{1, 8, 32}) || o.rounds != 3 || o.unmet != 50 || !o.floor {
					t.Errorf("options %+v", o)
				}
			}},
		{name: "quick", args: []string{"-quick"},
			check: func(t *testing.T, o options) {
				if o.dur != time.Second || o.entries != 10_000 || o.rules != 1_000 || o.memEntries != 100_000 || o.categories ||
					len(o.conns) != 2 || o.conns[1] != 32 || o.rounds != 1 {
					t.Errorf("options %+v", o)
				}
			}},
		{name: "quick, explicit flags win", args: []string{"-quick", "-d", "3s", "-entries", "500"},
			check: func(t *testing.T, o options) {
				if o.dur != 3*time.Second || o.entries != 500 {
					t.Errorf("options %+v", o)
				}
			}},
		{name: "profile: socketmap and policy at 32 by default", args: []string{"-profile", "/tmp/p"},
			check: func(t *testing.T, o options) {
				if len(o.profileStep) != 2 || !o.profileStep["socketmap-32"] || !o.profileStep["policy-32"] || o.keep {
					t.Errorf("profile steps %v, keep %v", o.profileStep, o.keep)
				}
			}},
		{name: "profile: the highest count when 32 is not run", args: []string{"-profile", "/tmp/p", "-c", "1,8"},
			check: func(t *testing.T, o options) {
				if !o.profileStep["socketmap-8"] || !o.profileStep["policy-8"] {
					t.Errorf("profile steps %v", o.profileStep)
				}
			}},
		{name: "profile-step alone keeps the working directory", args: []string{"-profile-step", "socketmap-exact-32, reload,redis-1"},
			check: func(t *testing.T, o options) {
				if len(o.profileStep) != 3 || !o.profileStep["socketmap-exact-32"] || !o.profileStep["reload"] || o.profileDir != "" || !o.keep {
					t.Errorf("profile steps %v, dir %q, keep %v", o.profileStep, o.profileDir, o.keep)
				}
			}},
		{name: "profile-step of a step not run", args: []string{"-profile", "/tmp/p", "-profile-step", "socketmap-64"}, wantErr: true},
		{name: "profile-step of a per-kind step with -kinds=false", args: []string{"-kinds=false", "-profile-step", "socketmap-miss-32"}, wantErr: true},
		{name: "profile-step reload without the reload step", args: []string{"-steps", "load", "-profile-step", "reload"}, wantErr: true},
		{name: "in-process and daemon profiling together", args: []string{"-cpuprofile", "c.prof", "-profile", "/tmp/p"}, wantErr: true},
		{name: "daemon environment", args: []string{"-daemon-env", "GOMAXPROCS=1, GODEBUG=gctrace=1,x=a=b"},
			check: func(t *testing.T, o options) {
				if want := []string{"GOMAXPROCS=1", "GODEBUG=gctrace=1", "x=a=b"}; !slices.Equal(o.daemonEnv, want) {
					t.Errorf("daemon env %q, want %q", o.daemonEnv, want)
				}
			}},
		{name: "daemon environment without a value", args: []string{"-daemon-env", "GOMAXPROCS"}, wantErr: true},
		{name: "daemon environment without a name", args: []string{"-daemon-env", "=1"}, wantErr: true},
		{name: "daemon environment in process", args: []string{"-daemon-env", "GOGC=1", "-cpuprofile", "c.prof"}, wantErr: true},
		{name: "unknown step", args: []string{"-steps", "load,warp"}, wantErr: true},
		{name: "bad connection count", args: []string{"-c", "1,x"}, wantErr: true},
		{name: "no rounds", args: []string{"-rounds", "0"}, wantErr: true},
		{name: "unmet over 100 per cent", args: []string{"-unmet", "101"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseFlags(tt.args, &stderr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags(%q) error %v, want error %v; stderr:\n%s", tt.args, err, tt.wantErr, stderr.String())
			}
			if tt.wantErr && stderr.Len() == 0 {
				t.Error("refused without saying why on stderr")
			}
			if tt.check != nil && err == nil {
				tt.check(t, o)
			}
		})
	}
}

// res builds a loadgen result as the bench parses it.
func res(id, proto string, conns int, line string) *result {
	return &result{id: id, name: id, proto: proto, conns: conns, f: parseFields(line), cpu: -1}
}

// TestSummary checks that the summary has one PASS, FAIL or SKIP line per
// performance target whatever was measured, judges throughput and p99 at
// 32 connections against redis of the same count, and that the exit
// status follows the failures only.
func TestSummary(t *testing.T) {
	full := func(smOps, smP99, pdOps string) []*result {
		return []*result{
			res("redis-1", "redis", 1, "ops=100 ops_per_s=100 p50_us=1 p99_us=1 errors=0 wrong=0"),
			res("socketmap-1", "socketmap", 1, "ops=10 ops_per_s=10 p50_us=900 p99_us=900 errors=0 wrong=0"),
			res("policy-1", "policy", 1, "ops=10 ops_per_s=10 p50_us=900 p99_us=900 errors=0 wrong=0"),
			res("redis-32", "redis", 32, "ops=1000 ops_per_s=1000 p50_us=500 p99_us=4000 errors=0 wrong=0"),
			res("socketmap-32", "socketmap", 32, "ops="+smOps+" ops_per_s="+smOps+" p50_us=400 p99_us="+smP99+" errors=0 wrong=0"),
			res("policy-32", "policy", 32, "ops="+pdOps+" ops_per_s="+pdOps+" p50_us=400 p99_us=9000 errors=0 wrong=0"),
		}
	}
	passReload := func(b *bench) {
		b.targets["reload-time"] = target{ok: true, detail: "300ms"}
		b.targets["reload-clean"] = target{ok: true}
		b.targets["mem-rss"] = target{ok: true}
		b.targets["mem-startup"] = target{ok: true}
	}
	tests := []struct {
		name    string
		args    []string
		results []*result
		setup   func(b *bench)
		wantOK  bool
		want    []string // lines (prefixes after trimming) that must be there
		notWant []string // texts that must not be there
	}{
		{name: "all pass", results: full("1000", "4000", "800"), setup: passReload, wantOK: true,
			want: []string{"PASS  socketmap ≥ 1.0x redis GET at 32 connections", "PASS  socketmap p99 ≤ redis GET p99 at 32 connections",
				"PASS  policy delegation ≥ 0.8x redis GET at 32 connections", "PASS  zero errors and wrong answers",
				"PASS  reload: new table answers < 1 s", "PASS  reload: zero failed", "PASS  VmRSS with 1,000,000 entries < 300 MB",
				"PASS  start-up with 1,000,000 entries < 5 s"}},
		{name: "slower, later and wrong", setup: passReload,
			results: append(full("999", "4001", "799"), res("socketmap-miss-32", "socketmap", 32, "ops=5 ops_per_s=5 p50_us=1 p99_us=1 errors=2 wrong=1")),
			want:    []string{"FAIL  socketmap ≥ 1.0x", "FAIL  socketmap p99", "FAIL  policy delegation", "FAIL  zero errors and wrong answers"}},
		{name: "median of three rounds, each against its own redis", setup: passReload, wantOK: true,
			// Round 1 alone would fail all three; rounds 2 and 3 pass.
			results: append(full("950", "4400", "700"),
				res("redis-32/2", "redis", 32, "ops=500 ops_per_s=500 p50_us=500 p99_us=4000 errors=0 wrong=0"),
				res("socketmap-32/2", "socketmap", 32, "ops=550 ops_per_s=550 p50_us=400 p99_us=3000 errors=0 wrong=0"),
				res("policy-32/2", "policy", 32, "ops=450 ops_per_s=450 p50_us=400 p99_us=9000 errors=0 wrong=0"),
				res("redis-32/3", "redis", 32, "ops=2000 ops_per_s=2000 p50_us=500 p99_us=2000 errors=0 wrong=0"),
				res("socketmap-32/3", "socketmap", 32, "ops=2040 ops_per_s=2040 p50_us=400 p99_us=2000 errors=0 wrong=0"),
				res("policy-32/3", "policy", 32, "ops=1700 ops_per_s=1700 p50_us=400 p99_us=9000 errors=0 wrong=0")),
			want: []string{"PASS  socketmap ≥ 1.0x redis GET at 32 connections           1.02x (round 1: 950 vs 1000 ops/s, median of 3 rounds: 0.95x 1.10x 1.02x) [rounds split: 2 of 3 pass]",
				"PASS  socketmap p99 ≤ redis GET p99 at 32 connections        1.00x redis's (round 1: 4400 µs vs 4000 µs, p50 400 vs 500 µs, median of 3 rounds: 1.10x 0.75x 1.00x) [rounds split: 2 of 3 pass]",
				"PASS  policy delegation ≥ 0.8x redis GET at 32 connections   0.85x (round 1: 700 vs 1000 ops/s, median of 3 rounds: 0.70x 0.90x 0.85x) [rounds split: 2 of 3 pass]"}},
		{name: "of two rounds the worse decides", setup: passReload,
			results: append(full("1100", "3000", "900"),
				res("redis-32/2", "redis", 32, "ops=1000 ops_per_s=1000 p50_us=500 p99_us=4000 errors=0 wrong=0"),
				res("socketmap-32/2", "socketmap", 32, "ops=900 ops_per_s=900 p50_us=400 p99_us=5000 errors=0 wrong=0"),
				res("policy-32/2", "policy", 32, "ops=700 ops_per_s=700 p50_us=400 p99_us=9000 errors=0 wrong=0")),
			want: []string{"FAIL  socketmap ≥ 1.0x", "0.90x (round 1: 1100 vs 1000 ops/s, median of 2 rounds: 1.10x 0.90x)",
				"FAIL  socketmap p99", "1.25x redis's", "FAIL  policy delegation ≥ 0.8x redis GET at 32 connections   0.70x"}},
		{name: "rounds that agree are not called split", setup: passReload, wantOK: true,
			results: append(full("1100", "3000", "900"),
				res("redis-32/2", "redis", 32, "ops=1000 ops_per_s=1000 p50_us=500 p99_us=4000 errors=0 wrong=0"),
				res("socketmap-32/2", "socketmap", 32, "ops=1200 ops_per_s=1200 p50_us=400 p99_us=3500 errors=0 wrong=0"),
				res("policy-32/2", "policy", 32, "ops=850 ops_per_s=850 p50_us=400 p99_us=9000 errors=0 wrong=0")),
			want:    []string{"PASS  socketmap ≥ 1.0x redis GET at 32 connections           1.10x (round 1: 1100 vs 1000 ops/s, median of 2 rounds: 1.10x 1.20x)"},
			notWant: []string{"split"}},
		{name: "no answers is no p99 pass", results: full("0", "-1", "800"), setup: passReload,
			want: []string{"FAIL  socketmap p99"}},
		{name: "reload errors do not count twice", setup: func(b *bench) {
			passReload(b)
			b.targets["reload-clean"] = target{ok: false, detail: "stale=3"}
		}, results: append(full("1000", "4000", "800"), res("reload", "socketmap", 32, "ops=5 errors=4 wrong=4")),
			want: []string{"PASS  zero errors", "FAIL  reload: zero failed"}},
		{name: "no redis-server", results: full("1000", "4000", "800")[1:3],
			want: []string{"SKIP  socketmap ≥ 1.0x", "no redis-server", "SKIP  reload: new table", "-steps without reload",
				"SKIP  VmRSS with 1,000,000 entries"}, wantOK: true},
		{name: "judged at the highest count when 32 is not run", args: []string{"-c", "1"}, results: full("1000", "4000", "800")[:3],
			want: []string{"FAIL  socketmap ≥ 1.0x redis GET at 1 connections", "[the target is set at 32 connections]"}},
		{name: "smaller memory table", args: []string{"-mem-entries", "100000"}, results: full("1000", "4000", "800"), setup: passReload, wantOK: true,
			want: []string{"PASS  VmRSS with 100,000 entries < 300 MB", "[the target is set at 1,000,000 entries]"}},
		{name: "a ratio just under the line shows three decimals", results: full("998", "4000", "800"), setup: passReload,
			want: []string{"FAIL  socketmap ≥ 1.0x redis GET at 32 connections           0.998x (998 vs 1000 ops/s)",
				"PASS  policy delegation ≥ 0.8x redis GET at 32 connections   0.80x"}},
		{name: "another policy mix is named", args: []string{"-unmet", "0"}, results: full("1000", "4000", "800"), setup: passReload, wantOK: true,
			want: []string{"PASS  policy delegation ≥ 0.8x redis GET at 32 connections   0.80x (800 vs 1000 ops/s) [-unmet 0; the benchmark's mix is 50]"}},
		{name: "another mix at another connection count names both", args: []string{"-c", "1", "-unmet", "0"}, results: full("1000", "4000", "800")[:3],
			want: []string{"FAIL  policy delegation ≥ 0.8x redis GET at 1 connections", "[the target is set at 32 connections] [-unmet 0; the benchmark's mix is 50]"}},
		{name: "bench/floor's ratios are noted, not judged", setup: passReload, wantOK: true,
			results: append(full("1000", "4000", "800"),
				res("floor-socketmap-32", "socketmap", 32, "ops=1250 ops_per_s=1250 p50_us=300 p99_us=3000 errors=0 wrong=0"),
				res("floor-policy-32", "policy", 32, "ops=1000 ops_per_s=1000 p50_us=300 p99_us=3000 errors=0 wrong=0")),
			want: []string{"PASS  socketmap ≥ 1.0x redis GET at 32 connections           1.00x (1000 vs 1000 ops/s)",
				"reached socketmap 1.25x and policy 1.00x redis GET at 32 connections",
				"the daemon reached 0.80x and 0.80x of bench/floor's rate"}},
		{name: "bench/floor in every round: medians and each round's value", setup: passReload,
			results: append(full("1000", "4000", "800"),
				res("floor-socketmap-32", "socketmap", 32, "ops=1000 ops_per_s=1000 p50_us=300 p99_us=3000 errors=0 wrong=0"),
				res("floor-policy-32", "policy", 32, "ops=1000 ops_per_s=1000 p50_us=300 p99_us=3000 errors=0 wrong=0"),
				res("redis-32/2", "redis", 32, "ops=1000 ops_per_s=1000 p50_us=500 p99_us=4000 errors=0 wrong=0"),
				res("socketmap-32/2", "socketmap", 32, "ops=900 ops_per_s=900 p50_us=400 p99_us=5000 errors=0 wrong=0"),
				res("policy-32/2", "policy", 32, "ops=600 ops_per_s=600 p50_us=400 p99_us=9000 errors=0 wrong=0"),
				res("floor-socketmap-32/2", "socketmap", 32, "ops=900 ops_per_s=900 p50_us=300 p99_us=3000 errors=0 wrong=0"),
				res("floor-policy-32/2", "policy", 32, "ops=800 ops_per_s=800 p50_us=300 p99_us=3000 errors=0 wrong=0")),
			want: []string{"reached socketmap 0.90x (1.00 0.90) and policy 0.80x (1.00 0.80)",
				"the daemon reached 1.00x (1.00 1.00) and 0.75x (0.80 0.75) of bench/floor's rate"}},
		{name: "bench/floor missing from a round is not noted", setup: passReload, wantOK: true,
			results: append(full("1000", "4000", "800"),
				res("floor-socketmap-32", "socketmap", 32, "ops=1250 ops_per_s=1250 p50_us=300 p99_us=3000 errors=0 wrong=0"),
				res("redis-32/2", "redis", 32, "ops=1000 ops_per_s=1000 p50_us=500 p99_us=4000 errors=0 wrong=0"),
				res("socketmap-32/2", "socketmap", 32, "ops=1000 ops_per_s=1000 p50_us=400 p99_us=3000 errors=0 wrong=0"),
				res("policy-32/2", "policy", 32, "ops=800 ops_per_s=800 p50_us=400 p99_us=9000 errors=0 wrong=0")),
			notWant: []string{"bench/floor"}},
		{name: "memory step off", args: []string{"-mem-entries", "0"}, results: full("1000", "4000", "800"), wantOK: true,
			want: []string{"SKIP  VmRSS with 1,000,000 entries", "-mem-entries 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			b := &bench{o: o, out: &out, targets: map[string]target{}, start: time.Now()}
			redis := map[int]*result{}
			for _, r := range tt.results {
				if r.proto == "redis" {
					redis[r.conns] = r
					b.results = append(b.results, r)
					continue
				}
				if rd := redis[r.conns]; rd != nil && r.id != "reload" {
					r.ratio = r.rate() / rd.rate()
				}
				b.results = append(b.results, r)
			}
			if tt.setup != nil {
				tt.setup(b)
			}
			ok := b.summary()
			text := out.String()
			if ok != tt.wantOK {
				t.Errorf("summary() = %v, want %v\n%s", ok, tt.wantOK, text)
			}
			if n := strings.Count(text, "\n  PASS  ") + strings.Count(text, "\n  FAIL  ") + strings.Count(text, "\n  SKIP  "); n != len(targetIDs) {
				t.Errorf("%d target lines, want %d\n%s", n, len(targetIDs), text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("summary lacks %q\n%s", w, text)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(text, w) {
					t.Errorf("summary has %q\n%s", w, text)
				}
			}
		})
	}
}

// TestLineWatcher checks that the start announcement of loadgen is seen
// however its output is split, once, and kept out of the error text.
func TestLineWatcher(t *testing.T) {
	for _, chunks := range [][]string{
		{"loadgen: load started\n", "first error: x\n"},
		{"loa", "dgen: load st", "arted\nfirst error: x\n"},
		{"loadgen: load started\nfirst error: x\n"},
		{"loadgen: load started\nfirst", " error: x\n"},
	} {
		var out bytes.Buffer
		n := 0
		lw := &lineWatcher{w: &out, line: loadgenStarted, found: func() { n++ }}
		for _, c := range chunks {
			if k, err := lw.Write([]byte(c)); err != nil || k != len(c) {
				t.Fatalf("Write(%q) = %d, %v", c, k, err)
			}
		}
		if n != 1 || out.String() != "first error: x\n" {
			t.Errorf("chunks %q: found %d times, passed on %q", chunks, n, out.String())
		}
	}
}

// TestMonitorLogCounts checks the count of the monitor's probes and
// summaries in the daemon's log, text and JSON.
func TestMonitorLogCounts(t *testing.T) {
	log := `time=2026-11-23T11:01:06.430Z level=INFO msg="policy table loaded" path=/t files=2 outbound=10000
time=2026-11-23T11:01:11.544Z level=INFO msg="outbound probe inconclusive; retried at the next check" component=monitor entry=s0.example level=encrypt status=temporary
time=2026-11-23T11:01:12.340Z level=WARN msg="probe failed" component=monitor entry=[mx.s1.example] error="x"
time=2026-11-23T11:01:12.340Z level=WARN msg="outbound TLS policy" component=monitor event=probe_failed entry=s3.example
time=2026-11-23T11:01:12.340Z level=INFO msg="probe cache event" component=probe-cache target=s4.example
time=2026-11-23T12:01:12.340Z level=WARN msg="monitor behind: the probe rate limit or the workers leave checks overdue" component=monitor keys=61000 probed=6000
{"time":"2026-11-23T11:01:11Z","level":"INFO","msg":"outbound probe inconclusive","component":"monitor","entry":"s9.example"}
{"time":"2026-11-23T12:01:11Z","level":"INFO","msg":"monitor checks","component":"monitor","keys":3}
`
	if n := monitorProbes([]byte(log)); n != 4 {
		t.Errorf("monitorProbes = %d, want 4", n)
	}
	if n := monitorSummaries([]byte(log)); n != 2 {
		t.Errorf("monitorSummaries = %d, want 2", n)
	}
}

// TestGetProfile checks that a profile is saved from a loopback pprof
// listener and that an error answer is reported, not saved.
func TestGetProfile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/heap", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "PROFILE") })
	mux.HandleFunc("/debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Could not enable CPU profiling: cpu profiling already in use", http.StatusInternalServerError)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()

	dir := t.TempDir()
	var out bytes.Buffer
	b := &bench{out: &out, pprofAddr: l.Addr().String(), profileDir: dir}
	b.fetchProfile(context.Background(), "heap?gc=1", "heap.pprof", "heap")
	b.fetchProfile(context.Background(), "profile?seconds=1", "cpu-x.pprof", "CPU profile of x")
	b.printProfiles()
	if data, err := os.ReadFile(filepath.Join(dir, "heap.pprof")); err != nil || string(data) != "PROFILE" {
		t.Errorf("heap.pprof: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cpu-x.pprof")); err == nil {
		t.Error("an error answer was saved as a profile")
	}
	if s := out.String(); !strings.Contains(s, "heap written to "+filepath.Join(dir, "heap.pprof")) || !strings.Contains(s, "already in use") {
		t.Errorf("output:\n%s", s)
	}
}

// TestWaitQuiet checks that an idle process is found quiet within the
// quiet window, and that a busy one is measured after maxWait instead of
// failing the run.
func TestWaitQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds")
	}
	for _, tt := range []struct {
		name      string
		bin       string
		env       []string
		args      []string
		wantQuiet bool
	}{
		{"idle", "/bin/sh", nil, []string{"-c", "exec sleep 30"}, true},
		{"busy", os.Args[0], []string{spinEnv + "=1", "GOMAXPROCS=8"}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := startProc(tt.name, filepath.Join(t.TempDir(), "log"), tt.bin, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.cmd.Process.Kill()
			start := time.Now()
			st, quiet, err := waitQuiet(context.Background(), p, start, 0, quietWindow+500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if quiet != tt.wantQuiet {
				t.Errorf("quiet = %v (CPU %.2f), want %v", quiet, st.idleCPU, tt.wantQuiet)
			}
			if tt.wantQuiet && st.idleCPU >= quietCPU || !tt.wantQuiet && st.idleCPU < quietCPU {
				t.Errorf("idle CPU %.2f of a core", st.idleCPU)
			}
			if st.rss <= 0 {
				t.Errorf("VmRSS %d", st.rss)
			}
		})
	}
}

// TestStartProcEnv checks that -daemon-env reaches the process it is for,
// on top of the environment, and only that one.
func TestStartProcEnv(t *testing.T) {
	t.Setenv("BENCH_KEPT", "kept")
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"with env", []string{"BENCH_X=a=b"}, "a=b kept\n"},
		{"without", nil, " kept\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "log")
			p, err := startProc(tt.name, log, "/bin/sh", tt.env, "-c", `echo "$BENCH_X $BENCH_KEPT"`)
			if err != nil {
				t.Fatal(err)
			}
			<-p.done
			if got, err := os.ReadFile(log); err != nil || string(got) != tt.want {
				t.Errorf("output %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
)

// bench is one run of the benchmark.
type bench struct {
	o              options
	out, log       io.Writer
	work, root     string
	daemonBin      string
	loadgenBin     string
	floorBin       string
	tableDir       string
	cases          string // directory of loadgen -cases files
	smAddr, pdAddr string
	redisAddr      string // "" when redis is skipped
	daemon         server
	redis          *proc
	floor          *proc  // bench/floor; nil without -floor or redis
	floorSM        string // its socketmap address
	floorPD        string // its policy delegation address
	pprofAddr      string // the daemon's --pprof listener; "" = none
	profileDir     string
	profMu         sync.Mutex
	profMsgs       []string    // profiles written, printed after the table
	ready          daemonState // the benchmark daemon when the load steps began
	results        []*result
	targets        map[string]target // by id, see targetIDs
	notes          []string          // printed under the targets
	start          time.Time
}

// daemonState is what /proc said about the daemon at one moment.
type daemonState struct {
	at      time.Time
	cpu     float64 // CPU seconds used so far (user + system)
	rss     int64
	idleCPU float64 // share of one core used while idle, just before
}

// server is the daemon under test: a tlspolicyd process or, for
// profiling, the same servers inside this process.
type server interface {
	pid() int
	stop() error
}

// result is one load step's loadgen line and what the server spent on it.
type result struct {
	id       string // as in -profile-step: socketmap-32, reload, …
	name     string
	proto    string
	conns    int
	f        map[string]string
	ratio    float64 // to redis GET at the same connection count; 0 = none
	dur      time.Duration
	daemon   bool    // the server was the daemon (not redis)
	cpu      float64 // the server's CPU seconds during the step; -1 unknown
	genCPU   float64 // loadgen's CPU seconds (user + system, its whole run); -1 unknown
	rss      int64   // the server's VmRSS after the step; 0 unknown
	profiled bool    // a CPU profile was taken during the step
}

func (r *result) int(k string) int64 {
	n, _ := strconv.ParseInt(r.f[k], 10, 64)
	return n
}

func (r *result) rate() float64 {
	v, _ := strconv.ParseFloat(r.f["ops_per_s"], 64)
	return v
}

// cpuPerOp is the server's CPU microseconds per answered request, or -1.
func (r *result) cpuPerOp() float64 {
	if r.cpu < 0 || r.int("ops") <= 0 {
		return -1
	}
	return r.cpu * 1e6 / float64(r.int("ops"))
}

// genCPUPerOp is loadgen's CPU microseconds per answered request, or -1.
// On a machine whose cores the server and loadgen share, the rate is
// about cores / (server + loadgen CPU per request).
func (r *result) genCPUPerOp() float64 {
	if r.genCPU < 0 || r.int("ops") <= 0 {
		return -1
	}
	return r.genCPU * 1e6 / float64(r.int("ops"))
}

// target is the verdict of one target of the summary (its name comes
// from summary, by id).
type target struct {
	ok     bool
	skip   bool
	detail string
}

func newBench(ctx context.Context, o options, out, log io.Writer) (*bench, error) {
	b := &bench{o: o, out: out, log: log, start: time.Now(), targets: map[string]target{}}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	b.root = root
	if o.work == "" {
		if b.work, err = os.MkdirTemp("", "tlspolicyd-bench-"); err != nil {
			return nil, err
		}
	} else {
		b.work = o.work
		if err := os.MkdirAll(b.work, 0o755); err != nil {
			return nil, err
		}
	}
	b.tableDir = filepath.Join(b.work, "table")
	b.cases = filepath.Join(b.work, "cases")
	if o.profileStep != nil { // -profile or -profile-step
		b.profileDir = o.profileDir
		if b.profileDir == "" {
			b.profileDir = filepath.Join(b.work, "profiles")
		}
		if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *bench) close() {
	if b.daemon != nil {
		_ = b.daemon.stop()
	}
	if b.redis != nil {
		_ = b.redis.stop()
	}
	if b.floor != nil {
		_ = b.floor.stop()
	}
	if b.o.keep || b.o.work != "" {
		fmt.Fprintf(b.out, "\nworking directory kept: %s\n", b.work)
		return
	}
	_ = os.RemoveAll(b.work)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "[%5.1fs] "+format+"\n", append([]any{time.Since(b.start).Seconds()}, args...)...)
}

func (b *bench) inproc() bool { return b.o.cpuProfile != "" || b.o.memProfile != "" }

func (b *bench) run(ctx context.Context) error {
	fmt.Fprintf(b.out, "tlspolicyd-bench: %d outbound entries, %d inbound rules, %s per step, connections %v, GOMAXPROCS of this machine: %d CPUs\n",
		b.o.entries, b.o.rules, b.o.dur, b.o.conns, numCPU())
	if len(b.o.daemonEnv) > 0 {
		fmt.Fprintf(b.out, "tlspolicyd-bench: the daemon runs with %s in its environment (-daemon-env)\n", strings.Join(b.o.daemonEnv, " "))
	}
	if err := b.build(ctx); err != nil {
		return err
	}
	if err := b.generate(); err != nil {
		return err
	}
	if b.o.steps["load"] || b.o.steps["reload"] {
		if b.o.steps["load"] {
			if err := b.startRedis(ctx); err != nil {
				return err
			}
		}
		if err := b.startDaemon(ctx); err != nil {
			return err
		}
		if b.o.steps["load"] {
			if err := b.startFloor(ctx); err != nil {
				return err
			}
			if err := b.loadSteps(ctx); err != nil {
				return err
			}
			if b.floor != nil {
				_ = b.floor.stop()
				b.floor = nil
			}
		}
		if b.o.steps["reload"] {
			if err := b.reloadStep(ctx); err != nil {
				return err
			}
		}
		if err := stopProfiles(b.o); err != nil {
			return err
		}
		b.daemonReport()
	}
	if b.daemon != nil {
		_ = b.daemon.stop()
		b.daemon = nil
	}
	if b.redis != nil {
		_ = b.redis.stop()
		b.redis = nil
	}
	if b.o.steps["mem"] && b.o.memEntries > 0 {
		if err := b.memoryStep(ctx); err != nil {
			return err
		}
	}
	return nil
}

// moduleRoot is the directory of this repository's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run inside the tlspolicyd repository (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// goTool finds the go command: on PATH, else in the usual install place.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if g := os.Getenv("GOROOT"); g != "" {
		return filepath.Join(g, "bin", "go")
	}
	return "/usr/local/go/bin/go"
}

// build compiles the daemon and the load generator from this repository.
func (b *bench) build(ctx context.Context) error {
	b.daemonBin = filepath.Join(b.work, "tlspolicyd")
	b.loadgenBin = filepath.Join(b.work, "loadgen")
	b.floorBin = filepath.Join(b.work, "floor")
	for _, x := range []struct{ out, pkg string }{{b.daemonBin, "./cmd/tlspolicyd"}, {b.loadgenBin, "./bench/loadgen"}, {b.floorBin, "./bench/floor"}} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", x.out, x.pkg)
		cmd.Dir = b.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", x.pkg, err, out)
		}
	}
	b.logf("built %s, bench/loadgen and bench/floor", "cmd/tlspolicyd")
	return nil
}

// Cases files.
const (
	casesMixed  = "socketmap-mixed.jsonl"
	casesRedis  = "redis-mixed.jsonl"
	casesPolicy = "policy.jsonl"
	casesReload = "socketmap-reload.jsonl"
	casesMem    = "socketmap-1m.jsonl"
	// The floor steps' cases: the same requests as casesMixed and
	// casesPolicy, with bench/floor's constant answers.
	casesFloorSM = "socketmap-floor.jsonl"
	casesFloorPD = "policy-floor.jsonl"
)

// bench/floor's answers, as loadgen checks them.
const (
	floorSMWant = "NOTFOUND "
	floorPDWant = "action=DUNNO"
)

func casesKind(kind string) string { return "socketmap-" + kind + ".jsonl" }

// generate writes the benchmark table and the loadgen cases.
func (b *bench) generate() error {
	t0 := time.Now()
	spec := tableSpec{Outbound: b.o.entries, Rules: b.o.rules}
	if err := writeTable(b.tableDir, spec); err != nil {
		return err
	}
	if err := os.MkdirAll(b.cases, 0o755); err != nil {
		return err
	}
	mixed := genLookups(b.o.seed, spec, b.o.lookups, "")
	var sm, rd, rl, fsm []lookupCase
	for _, l := range mixed {
		sm = append(sm, lookupCase{Key: l.key, Want: l.old})
		rd = append(rd, lookupCase{Key: l.key, Want: l.redis})
		rl = append(rl, lookupCase{Key: l.key, Want: l.old, Next: l.new})
		fsm = append(fsm, lookupCase{Key: l.key, Want: floorSMWant})
	}
	files := map[string][]lookupCase{casesMixed: sm, casesRedis: rd, casesReload: rl, casesFloorSM: fsm}
	for i, kind := range []string{kindExact, kindParent, kindMiss} {
		var cs []lookupCase
		for _, l := range genLookups(b.o.seed+uint64(i)+1, spec, b.o.lookups, kind) {
			cs = append(cs, lookupCase{Key: l.key, Want: l.old})
		}
		files[casesKind(kind)] = cs
	}
	var pc, fpd []lookupCase
	for i, p := range genPolicyCases(b.o.seed, spec, b.o.lookups, b.o.unmet) {
		pc = append(pc, lookupCase{Key: strconv.Itoa(i), Req: p.req, Want: p.want, Prefix: p.prefix, Contains: p.contains})
		fpd = append(fpd, lookupCase{Key: strconv.Itoa(i), Req: p.req, Want: floorPDWant})
	}
	files[casesPolicy], files[casesFloorPD] = pc, fpd
	for name, cs := range files {
		if err := writeCases(filepath.Join(b.cases, name), cs); err != nil {
			return err
		}
	}
	// The reload step's new table, written now so that only the rename
	// happens under load.
	next := spec
	next.Variant = 1
	for part := range next.outboundFiles() {
		if err := writeFile(filepath.Join(b.tableDir, "."+outboundFileName(part)+".new"), func(w io.Writer) error {
			return writeOutboundFile(w, next, part)
		}); err != nil {
			return err
		}
	}
	b.logf("generated table (%d outbound entries in %s, %d inbound rules) and %d lookups per step in %s",
		b.o.entries, b.tableDir, b.o.rules, b.o.lookups, time.Since(t0).Round(time.Millisecond))
	return nil
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// proc is a child process: the daemon or redis-server.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts bin with args, its output into logFile; env, if not
// empty, is added to this process's environment for it.
func startProc(name, logFile, bin string, env []string, args ...string) (*proc, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to 10 s, then kills.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// waitListen waits until every address accepts connections, or the
// process exits, or the timeout passes.
func waitListen(ctx context.Context, p *proc, timeout time.Duration, addrs ...string) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if p != nil {
				select {
				case <-p.done:
					return fmt.Errorf("%s exited before listening on %s: %v", p.name, a, p.err)
				default:
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listening on %s after %s", a, timeout)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// startRedis starts redis-server without persistence and loads it with
// the table's outbound keys and their policies.
func (b *bench) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath(b.o.redisBin)
	if err != nil {
		b.logf("redis-server not found (%v): skipping the redis comparison; on Debian: apt-get install redis-server", err)
		return nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	p, err := startProc("redis-server", filepath.Join(b.work, "redis.log"), bin, nil,
		"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")
	if err != nil {
		return err
	}
	b.redis = p
	if err := waitListen(ctx, p, 10*time.Second, addr); err != nil {
		return err
	}
	t0 := time.Now()
	spec := tableSpec{Outbound: b.o.entries}
	n, err := redisLoad(addr, spec)
	if err != nil {
		return fmt.Errorf("load redis: %w", err)
	}
	b.redisAddr = addr
	b.logf("redis-server (pid %d) on %s loaded with %d keys in %s", p.pid(), addr, n, time.Since(t0).Round(time.Millisecond))
	return nil
}

// startFloor starts bench/floor for the floor steps, unless -floor=false
// or there is no redis-server to compare it with.
func (b *bench) startFloor(ctx context.Context) error {
	if !b.o.floor || b.redisAddr == "" {
		return nil
	}
	sm, err := freeAddr()
	if err != nil {
		return err
	}
	pd, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := startProc("floor", filepath.Join(b.work, "floor.log"), b.floorBin, nil, "-socketmap", sm, "-policy", pd)
	if err != nil {
		return err
	}
	b.floor, b.floorSM, b.floorPD = p, sm, pd
	return waitListen(ctx, p, 10*time.Second, sm, pd)
}

// redisLoad SETs every outbound key of spec to its policy, pipelined.
func redisLoad(addr string, spec tableSpec) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriterSize(c, 1<<16)
	var kv [][2]string
	for i := range spec.nExact() {
		kv = append(kv, [2]string{exactKey(i), exactPolicy(i, 0)})
	}
	for j := range spec.nParent() {
		kv = append(kv, [2]string{parentKey(j), parentPolicy(j, 0)})
	}
	for start := 0; start < len(kv); start += 1000 {
		batch := kv[start:min(start+1000, len(kv))]
		for _, x := range batch {
			fmt.Fprintf(w, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(x[0]), x[0], len(x[1]), x[1])
		}
		if err := w.Flush(); err != nil {
			return 0, err
		}
		for range batch {
			l, err := r.ReadString('\n')
			if err != nil {
				return 0, err
			}
			if l != "+OK\r\n" {
				return 0, fmt.Errorf("SET: %q", l)
			}
		}
	}
	return len(kv), nil
}

// startDaemon starts tlspolicyd serve on the benchmark table (or, in the
// in-process mode, the same servers in this process) and waits until it
// listens and is quiet.
func (b *bench) startDaemon(ctx context.Context) error {
	var err error
	if b.smAddr, err = freeAddr(); err != nil {
		return err
	}
	if b.pdAddr, err = freeAddr(); err != nil {
		return err
	}
	t0 := time.Now()
	if b.inproc() {
		s, err := startInproc(ctx, b.tableDir, b.smAddr, b.pdAddr, filepath.Join(b.work, "daemon.log"))
		if err != nil {
			return err
		}
		b.daemon = s
		b.logf("servers started in this process for profiling in %s", time.Since(t0).Round(time.Millisecond))
		cpu, _ := procCPU(s.pid())
		rss, _ := procStatus(s.pid(), "VmRSS")
		b.ready = daemonState{at: time.Now(), cpu: cpu, rss: rss}
		return startProfiles(b.o)
	}
	args := []string{"--table", b.tableDir, "--socketmap", b.smAddr, "--policyd", b.pdAddr}
	if b.profileDir != "" {
		if b.pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		args = append(args, "--pprof", b.pprofAddr)
	}
	p, err := b.startServe(filepath.Join(b.work, "daemon.log"), args...)
	if err != nil {
		return err
	}
	b.daemon = p
	if err := waitListen(ctx, p, 60*time.Second, b.smAddr, b.pdAddr); err != nil {
		return fmt.Errorf("%w (log: %s)", err, filepath.Join(b.work, "daemon.log"))
	}
	listening := time.Now()
	rss, _ := procStatus(p.pid(), "VmRSS")
	b.logf("tlspolicyd (pid %d) listening on socketmap %s, policyd %s after %s; VmRSS %.0f MB",
		p.pid(), b.smAddr, b.pdAddr, time.Since(t0).Round(time.Millisecond), mb(rss))
	// The monitor (engine.Monitor, on as shipped) begins its first pass
	// 5 s after the start and spreads it over 90 % of probe.interval (an
	// hour): it never ends within a run. Measure once that pass has begun
	// and the daemon is quiet, so every step sees the same steady state.
	st, quiet, err := waitQuiet(ctx, p, listening, monitorStart, 60*time.Second)
	if err != nil {
		return err
	}
	b.ready = st
	state := "quiet"
	if !quiet {
		state = "still busy; measuring anyway"
		b.notes = append(b.notes, fmt.Sprintf("the benchmark daemon was still busy (%.0f %% of a core) when the load steps began", 100*st.idleCPU))
	}
	b.logf("daemon %s %s after listening (%.1f %% of a core over the last %s, the monitor's pass begun: %d probes logged); VmRSS %.0f MB",
		state, st.at.Sub(listening).Round(100*time.Millisecond), 100*st.idleCPU, quietWindow, monitorProbes(readFile(filepath.Join(b.work, "daemon.log"))), mb(st.rss))
	return nil
}

// monitorStart is how long after listening the daemon's monitor has begun
// its first pass (engine.Monitor starts it 5 s after Run).
const monitorStart = 6 * time.Second

// quietWindow is how long the daemon must stay under quietCPU to count as
// quiet.
const (
	quietWindow = 2 * time.Second
	quietCPU    = 0.05 // share of one core
)

// startServe starts `tlspolicyd serve` with args, its prober confined to
// this machine: DNS goes to a closed loopback port (every probe fails at
// once, nothing leaves the host) and the probe cache into the work
// directory.
func (b *bench) startServe(logFile string, args ...string) (*proc, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	args = append([]string{"serve", "--http", "", "--resolver", closed, "--probe-port", "9",
		"--probe-cache", filepath.Join(b.work, fmt.Sprintf("probes-%d.json", time.Now().UnixNano()))}, args...)
	return startProc("tlspolicyd", logFile, b.daemonBin, b.o.daemonEnv, args...)
}

// procCPU returns the CPU seconds (user + system) process pid has used.
func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(data, ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil // USER_HZ is 100 on Linux
}

// waitQuiet waits until at least minWait has passed since start and the
// process then used under quietCPU of a core in each second of a
// quietWindow. After maxWait since start it gives up waiting (quiet is
// false) but is no error: a daemon that keeps busy is measured busy.
func waitQuiet(ctx context.Context, p *proc, start time.Time, minWait, maxWait time.Duration) (st daemonState, quiet bool, err error) {
	if d := time.Until(start.Add(minWait)); d > 0 {
		select {
		case <-ctx.Done():
			return st, false, ctx.Err()
		case <-p.done:
			return st, false, fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-time.After(d):
		}
	}
	prev, err := procCPU(p.pid())
	if err != nil {
		return st, false, err
	}
	var window []float64 // CPU seconds used in each of the last seconds
	for {
		select {
		case <-ctx.Done():
			return st, false, ctx.Err()
		case <-p.done:
			return st, false, fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-time.After(time.Second):
		}
		cur, err := procCPU(p.pid())
		if err != nil {
			return st, false, err
		}
		window = append(window, cur-prev)
		prev = cur
		if n := int(quietWindow / time.Second); len(window) > n {
			window = window[len(window)-n:]
		}
		quiet = len(window) == int(quietWindow/time.Second) && !slices.ContainsFunc(window, func(c float64) bool { return c >= quietCPU })
		if quiet || time.Since(start) > maxWait {
			var sum float64
			for _, c := range window {
				sum += c
			}
			st = daemonState{at: time.Now(), cpu: cur, idleCPU: sum / float64(len(window))}
			st.rss, _ = procStatus(p.pid(), "VmRSS")
			return st, quiet, nil
		}
	}
}

// stepSpec is one load step.
type stepSpec struct {
	id, name, proto, addr, cases string
	conns                        int
	d                            time.Duration
	extra                        []string // more loadgen flags
	srvPID                       int      // the server measured
	daemon                       bool     // the server is the daemon
}

// step runs one load step: loadgen, the server's CPU and memory around
// it, and a CPU profile of the daemon if the step is in -profile-step.
func (b *bench) step(ctx context.Context, s stepSpec) (*result, error) {
	cpu0, cerr := procCPU(s.srvPID)
	var started func()
	var prof chan struct{}
	if b.o.profileStep[s.id] && b.pprofAddr != "" {
		// net/http/pprof takes whole seconds: the profile starts when
		// loadgen's measured run does and ends just before it.
		secs := max(1, int(s.d/time.Second))
		if s.id == "reload" {
			secs = max(1, int(min(s.d, reloadProfile)/time.Second))
		}
		prof = make(chan struct{})
		var once sync.Once
		started = func() {
			once.Do(func() {
				go func() {
					defer close(prof)
					b.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", secs), "cpu-"+s.id+".pprof", fmt.Sprintf("CPU profile of %s (%d s)", s.id, secs))
				}()
			})
		}
	}
	r, err := b.loadgen(ctx, s, started)
	if prof != nil {
		started() // if loadgen never announced its start
		<-prof
	}
	if err != nil {
		return nil, err
	}
	r.id, r.daemon, r.dur, r.profiled = s.id, s.daemon, s.d, prof != nil
	r.cpu = -1
	if cpu1, err := procCPU(s.srvPID); err == nil && cerr == nil {
		r.cpu = cpu1 - cpu0
	}
	r.rss, _ = procStatus(s.srvPID, "VmRSS")
	if v, err := strconv.ParseFloat(r.f["elapsed_s"], 64); err == nil {
		r.dur = time.Duration(v * float64(time.Second))
	}
	return r, nil
}

// reloadProfile is the length of the reload step's CPU profile: the
// rename comes 1 s in, then the daemon's parse and build.
const reloadProfile = 5 * time.Second

// loadgen runs loadgen for one load step and parses its result line. If
// started is not nil, loadgen announces the start of its measured run and
// started is called then.
func (b *bench) loadgen(ctx context.Context, s stepSpec, started func()) (*result, error) {
	args := append([]string{"-proto", s.proto, "-addr", s.addr, "-c", strconv.Itoa(s.conns),
		"-d", s.d.String(), "-cases", filepath.Join(b.cases, s.cases)}, s.extra...)
	var stdout, stderr bytes.Buffer
	var errw io.Writer = &stderr
	if started != nil {
		args = append(args, "-announce")
		errw = &lineWatcher{w: &stderr, line: loadgenStarted, found: started}
	}
	cmd := exec.CommandContext(ctx, b.loadgenBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, errw
	err := cmd.Run()
	if lw, ok := errw.(*lineWatcher); ok {
		stderr.Write(lw.buf) // an unfinished last line
	}
	if err != nil {
		return nil, fmt.Errorf("loadgen %s: %w\n%s", s.name, err, stderr.Bytes())
	}
	r := &result{name: s.name, proto: s.proto, conns: s.conns, f: parseFields(stdout.String()), genCPU: -1}
	if ps := cmd.ProcessState; ps != nil {
		r.genCPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if _, ok := r.f["ops_per_s"]; !ok {
		return nil, fmt.Errorf("loadgen %s: unexpected output %q", s.name, stdout.String())
	}
	if r.int("errors") > 0 {
		for _, l := range strings.SplitN(strings.TrimSpace(stderr.String()), "\n", 6)[:min(5, strings.Count(stderr.String(), "\n"))] {
			fmt.Fprintf(b.out, "    %s: %s\n", s.name, l)
		}
	}
	return r, nil
}

// loadgenStarted is the line loadgen -announce prints when its measured
// run begins (bench/loadgen startedLine).
const loadgenStarted = "loadgen: load started"

// lineWatcher passes writes on to w, leaving out the line it watches for
// and calling found when it sees it.
type lineWatcher struct {
	w     io.Writer
	line  string
	found func()
	buf   []byte
	seen  bool
}

func (l *lineWatcher) Write(p []byte) (int, error) {
	if l.seen {
		return l.w.Write(p)
	}
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := l.buf[:i+1]
		if string(bytes.TrimSpace(line)) == l.line {
			l.seen = true
			l.found()
		} else if _, err := l.w.Write(line); err != nil {
			return 0, err
		}
		l.buf = l.buf[i+1:]
		if l.seen {
			_, err := l.w.Write(l.buf)
			l.buf = nil
			return len(p), err
		}
	}
}

// parseFields parses loadgen's "k=v k=v …" line.
func parseFields(line string) map[string]string {
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	return f
}

const rowFormat = "%-22s %-30s %5s %8s %7s %7s %8s %6s %7s %9s %9s %6s\n"

func (b *bench) printHeader() {
	fmt.Fprintf(b.out, "\n"+rowFormat, "step", "what", "conns", "ops/s", "p50_us", "p99_us", "p999_us", "errors", "x redis", "cpu_us/op", "gen_us/op", "rss_MB")
}

func (b *bench) printRow(r *result) {
	ratio := "-"
	if r.ratio > 0 {
		ratio = fmt.Sprintf("%.2fx", r.ratio)
	}
	cpu, gen, rss := "-", "-", "-"
	if c := r.cpuPerOp(); c >= 0 {
		cpu = fmt.Sprintf("%.1f", c)
	}
	if c := r.genCPUPerOp(); c >= 0 {
		gen = fmt.Sprintf("%.1f", c)
	}
	if r.rss > 0 {
		rss = fmt.Sprintf("%.0f", mb(r.rss))
	}
	name := r.name
	if r.profiled {
		name += " *"
	}
	fmt.Fprintf(b.out, rowFormat, r.id, name, strconv.Itoa(r.conns), r.f["ops_per_s"], r.f["p50_us"], r.f["p99_us"], r.f["p999_us"], r.f["errors"], ratio, cpu, gen, rss)
}

// daemonSpec is a step against the benchmark daemon.
func (b *bench) daemonSpec(id, name, proto, addr, cases string, conns int, d time.Duration, extra ...string) stepSpec {
	return stepSpec{id: id, name: name, proto: proto, addr: addr, cases: cases, conns: conns, d: d, extra: extra,
		srvPID: b.daemon.pid(), daemon: true}
}

// loadSteps drives redis, socketmap and policy delegation at every
// connection count, interleaved so that drifting background load on the
// machine hits all three alike: at each count redis GET, then socketmap,
// then policy delegation, each for -d on fresh connections. Then, for
// -rounds, the three again at the count the targets are judged at.
func (b *bench) loadSteps(ctx context.Context) error {
	b.printHeader()
	for _, c := range b.o.conns {
		if err := b.round(ctx, c, 1); err != nil {
			return err
		}
	}
	for n := 2; n <= b.o.rounds; n++ {
		if err := b.round(ctx, targetConns(b.o.conns), n); err != nil {
			return err
		}
	}
	if b.o.categories {
		c := slices.Max(b.o.conns)
		redis := b.find(fmt.Sprintf("redis-%d", c))
		for _, kind := range []string{kindExact, kindParent, kindMiss} {
			name := map[string]string{kindExact: "socketmap exact hits", kindParent: "socketmap parent-walk hits", kindMiss: "socketmap misses"}[kind]
			r, err := b.step(ctx, b.daemonSpec(fmt.Sprintf("socketmap-%s-%d", kind, c), name, "socketmap", b.smAddr, casesKind(kind), c, b.o.dur))
			if err != nil {
				return err
			}
			b.add(r, redis)
		}
	}
	b.fetchProfile(ctx, "heap?gc=1", "heap-load.pprof", "heap in use after the load steps")
	b.printProfiles()
	return nil
}

// roundID is the id of load step step (e.g. "policy") at c connections in
// round n (from 1): "policy-32" for the first, "policy-32/2" for the second.
func roundID(step string, c, n int) string {
	if n == 1 {
		return fmt.Sprintf("%s-%d", step, c)
	}
	return fmt.Sprintf("%s-%d/%d", step, c, n)
}

// round runs round n of redis GET, socketmap and policy delegation at c
// connections; the daemon's ratios are to this round's redis step.
func (b *bench) round(ctx context.Context, c, n int) error {
	id := func(step string) string { return roundID(step, c, n) }
	var redis *result
	if b.redisAddr != "" {
		r, err := b.step(ctx, stepSpec{id: id("redis"), name: "redis GET (same keys)", proto: "redis",
			addr: b.redisAddr, cases: casesRedis, conns: c, d: b.o.dur, srvPID: b.redis.pid()})
		if err != nil {
			return err
		}
		redis = r
		b.add(r, nil)
	}
	r, err := b.step(ctx, b.daemonSpec(id("socketmap"), "socketmap tls_policy, mixed", "socketmap", b.smAddr, casesMixed, c, b.o.dur))
	if err != nil {
		return err
	}
	b.add(r, redis)
	name := fmt.Sprintf("policy delegation (%s rules)", thousands(b.o.rules))
	if b.o.rules == 10_000 {
		name = "policy delegation (10k rules)"
	}
	r, err = b.step(ctx, b.daemonSpec(id("policy"), name, "policy", b.pdAddr, casesPolicy, c, b.o.dur))
	if err != nil {
		return err
	}
	b.add(r, redis)
	if b.floor == nil || c != targetConns(b.o.conns) {
		return nil
	}
	for _, f := range []struct{ id, name, proto, addr, cases string }{
		{"floor-socketmap", "bench/floor socketmap NOTFOUND", "socketmap", b.floorSM, casesFloorSM},
		{"floor-policy", "bench/floor policy DUNNO", "policy", b.floorPD, casesFloorPD},
	} {
		r, err := b.step(ctx, stepSpec{id: id(f.id), name: f.name, proto: f.proto,
			addr: f.addr, cases: f.cases, conns: c, d: b.o.dur, srvPID: b.floor.pid()})
		if err != nil {
			return err
		}
		b.add(r, redis)
	}
	return nil
}

func (b *bench) add(r, redis *result) {
	if redis != nil && redis.rate() > 0 {
		r.ratio = r.rate() / redis.rate()
	}
	b.results = append(b.results, r)
	b.printRow(r)
}

// find returns the result of the step with this id, or nil.
func (b *bench) find(id string) *result {
	for _, r := range b.results {
		if r.id == id {
			return r
		}
	}
	return nil
}

// reloadStep replaces the table file by rename while 32 connections look
// up keys, and checks that every answer is the old or the new one, that no
// old answer follows the first new one, and how long the switch took.
func (b *bench) reloadStep(ctx context.Context) error {
	c := slices.Max(b.o.conns)
	fmt.Fprintf(b.out, "\nreload under load: %d connections looking up keys until 1 s after the first new answer (at most %s); %s/outbound-*.yaml replaced by rename 1 s in\n",
		c, b.o.reloadDur, b.tableDir)
	type lg struct {
		r   *result
		err error
	}
	done := make(chan lg, 1)
	go func() {
		r, err := b.step(ctx, b.daemonSpec("reload", "socketmap during reload", "socketmap", b.smAddr, casesReload, c, b.o.reloadDur, "-after-new", "1s"))
		done <- lg{r, err}
	}()
	select {
	case <-time.After(time.Second):
	case x := <-done:
		return fmt.Errorf("load generator ended early: %v", x.err)
	}
	renamed := time.Now()
	for part := range (tableSpec{Outbound: b.o.entries}).outboundFiles() {
		name := outboundFileName(part)
		if err := os.Rename(filepath.Join(b.tableDir, "."+name+".new"), filepath.Join(b.tableDir, name)); err != nil {
			return err
		}
	}
	x := <-done
	if x.err != nil {
		return x.err
	}
	r := x.r
	b.printHeader()
	b.printRow(r)
	b.results = append(b.results, r)
	first := r.int("first_new_unix_ns")
	var sw time.Duration
	okSwitch := first > 0
	detail := "no new answer seen"
	if okSwitch {
		sw = time.Unix(0, first).Sub(renamed)
		okSwitch = sw < time.Second
		detail = fmt.Sprintf("%s from rename to the first new answer", sw.Round(time.Millisecond))
	}
	if took := lastReloadTook(filepath.Join(b.work, "daemon.log")); took != "" {
		detail += fmt.Sprintf(" (daemon: parse + build %s, after the %s debounce)", took, "200ms")
	}
	fmt.Fprintf(b.out, "  answers: %s old, %s new, %s wrong, %s stale (old answer to a request sent after the first new answer)\n",
		r.f["old"], r.f["new"], r.f["wrong"], r.f["stale"])
	b.printProfiles()
	b.targets["reload-time"] = target{ok: okSwitch, detail: detail}
	b.targets["reload-clean"] = target{ok: r.int("errors") == 0 && r.int("wrong") == 0 && r.int("stale") == 0 && r.int("new") > 0,
		detail: fmt.Sprintf("errors=%s wrong=%s stale=%s (old=%s new=%s)", r.f["errors"], r.f["wrong"], r.f["stale"], r.f["old"], r.f["new"])}
	return nil
}

// daemonReport prints what the benchmark daemon spent besides answering
// the load steps, the monitor above all, and keeps a note for the summary.
func (b *bench) daemonReport() {
	p, ok := b.daemon.(*proc)
	if !ok || b.ready.at.IsZero() {
		return
	}
	cpu, err := procCPU(p.pid())
	if err != nil {
		return
	}
	rss, _ := procStatus(p.pid(), "VmRSS")
	hwm, _ := procStatus(p.pid(), "VmHWM")
	var stepCPU float64
	var stepTime time.Duration
	for _, r := range b.results {
		if r.daemon && r.cpu >= 0 {
			stepCPU += r.cpu
			stepTime += r.dur
		}
	}
	log := readFile(filepath.Join(b.work, "daemon.log"))
	probes, passes := monitorProbes(log), monitorPasses(log)
	since := time.Since(b.ready.at)
	outside := max(since-stepTime, 0)
	pass := "no pass finished"
	if passes > 0 {
		pass = fmt.Sprintf("%d passes finished", passes)
	}
	pc := config.Default().Probe
	fmt.Fprintf(b.out, "\ndaemon as shipped, monitor on (probe.interval %s, %d workers, ≤ %d probes a minute; probes fail at once on the closed loopback resolver):\n",
		pc.Interval, pc.MonitorWorkers, pc.MaxPerMinute)
	fmt.Fprintf(b.out, "  monitor: %d probes logged since start, %s (a pass spreads over 90 %% of probe.interval)\n", probes, pass)
	fmt.Fprintf(b.out, "  CPU: %.1f %% of a core while idle before the load steps; since then %.1f s in the steps (%s) and %.1f s outside them (%s)\n",
		100*b.ready.idleCPU, stepCPU, stepTime.Round(time.Second), max(cpu-b.ready.cpu-stepCPU, 0), outside.Round(time.Second))
	fmt.Fprintf(b.out, "  VmRSS: %.0f MB before the load steps, %.0f MB now; VmHWM (peak) %.0f MB\n", mb(b.ready.rss), mb(rss), mb(hwm))
	b.notes = append(b.notes, fmt.Sprintf("the daemon's monitor ran during every step (%d probes logged, %s); idle, the daemon used %.1f %% of a core",
		probes, pass, 100*b.ready.idleCPU))
}

// monitorProbes counts the monitor's per-probe log lines (an inconclusive
// result, a failure or a finding; a clean result logs at debug level).
func monitorProbes(log []byte) int {
	n := 0
	for l := range bytes.Lines(log) {
		if (bytes.Contains(l, []byte("component=monitor")) || bytes.Contains(l, []byte(`"component":"monitor"`))) &&
			(bytes.Contains(l, []byte(" entry=")) || bytes.Contains(l, []byte(`"entry":`))) {
			n++
		}
	}
	return n
}

// monitorPasses counts the monitor's end-of-pass log lines.
func monitorPasses(log []byte) int {
	return bytes.Count(log, []byte(`msg="monitor pass`)) + bytes.Count(log, []byte(`"msg":"monitor pass`))
}

// memoryStep starts the daemon on a table of o.memEntries outbound entries
// and measures the time to listening and the resident memory.
func (b *bench) memoryStep(ctx context.Context) error {
	t0 := time.Now()
	dir := filepath.Join(b.work, "table-mem")
	spec := tableSpec{Outbound: b.o.memEntries, Rules: b.o.rules}
	if err := writeTable(dir, spec); err != nil {
		return err
	}
	var cs []lookupCase
	for _, l := range genLookups(b.o.seed+10, spec, b.o.lookups, "") {
		cs = append(cs, lookupCase{Key: l.key, Want: l.old})
	}
	if err := writeCases(filepath.Join(b.cases, casesMem), cs); err != nil {
		return err
	}
	size := dirSize(dir)
	fmt.Fprintf(b.out, "\nmemory and start-up: %s outbound entries + %s inbound rules (%.1f MB of YAML, generated in %s)\n",
		thousands(b.o.memEntries), thousands(b.o.rules), float64(size)/1e6, time.Since(t0).Round(time.Millisecond))
	if b.o.heapProfile != "" {
		if err := heapProfile(dir, b.o.heapProfile); err != nil {
			return err
		}
		fmt.Fprintf(b.out, "  heap profile of the table loaded in this process written to %s\n", b.o.heapProfile)
	}
	sm, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{"--table", dir, "--socketmap", sm, "--policyd", ""}
	if b.profileDir != "" {
		if b.pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		args = append(args, "--pprof", b.pprofAddr)
	}
	logFile := filepath.Join(b.work, "daemon-mem.log")
	start := time.Now()
	p, err := b.startServe(logFile, args...)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := waitListen(ctx, p, 120*time.Second, sm); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logFile)
	}
	startup := time.Since(start)
	listening := time.Now()
	rssStart, _ := procStatus(p.pid(), "VmRSS")
	// As in production: once the monitor's first pass has begun (it
	// orders the table's enforced entries) and the daemon is quiet, some
	// lookups, checked.
	st, quiet, err := waitQuiet(ctx, p, listening, monitorStart, 60*time.Second)
	if err != nil {
		return err
	}
	d := min(b.o.dur, time.Second)
	r, err := b.step(ctx, stepSpec{id: "mem", name: fmt.Sprintf("socketmap, %s entries", thousands(b.o.memEntries)), proto: "socketmap",
		addr: sm, cases: casesMem, conns: 8, d: d, srvPID: p.pid(), daemon: true})
	if err != nil {
		return err
	}
	b.printHeader()
	b.printRow(r)
	b.results = append(b.results, r)
	rss, err := procStatus(p.pid(), "VmRSS")
	if err != nil {
		return err
	}
	hwm, _ := procStatus(p.pid(), "VmHWM")
	took := ""
	if m := tookRE.FindAllSubmatch(readFile(logFile), -1); len(m) > 0 {
		took = string(m[0][1])
	}
	busy := ""
	if !quiet {
		busy = fmt.Sprintf(", still using %.0f %% of a core", 100*st.idleCPU)
	}
	fmt.Fprintf(b.out, "  start-up (process start to listening): %s (daemon: parse + build %s)\n", startup.Round(time.Millisecond), took)
	fmt.Fprintf(b.out, "  VmRSS %.0f MB on listening, %.0f MB %s later with the monitor's pass begun (%d probes logged%s), %.0f MB after %s of lookups; VmHWM (peak) %.0f MB\n",
		mb(rssStart), mb(st.rss), st.at.Sub(listening).Round(time.Second), monitorProbes(readFile(logFile)), busy, mb(rss), d, mb(hwm))
	if b.pprofAddr != "" {
		b.fetchProfile(ctx, "heap?gc=1", "heap-mem.pprof", "heap in use with the memory table")
		b.fetchProfile(ctx, "allocs", "allocs-mem.pprof", "allocations since start (the start-up load of the memory table)")
		b.printProfiles()
	}
	b.targets["mem-rss"] = target{ok: rss < 300<<20,
		detail: fmt.Sprintf("%.0f MB after lookups with the monitor running (%.0f MB on listening, peak %.0f MB)", mb(rss), mb(rssStart), mb(hwm))}
	b.targets["mem-startup"] = target{ok: startup < 5*time.Second,
		detail: fmt.Sprintf("%s from process start to listening (parse + build %s)", startup.Round(time.Millisecond), took)}
	return nil
}

// thousands formats n with commas: 1,000,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// targetIDs are issue 7's targets in the order the summary prints them.
var targetIDs = []string{"sm-rate", "sm-p99", "pd-rate", "errors", "reload-time", "reload-clean", "mem-rss", "mem-startup"}

// Issue 7's thresholds, as ratios to redis GET at the target count.
const (
	smRateMin = 1.0 // socketmap throughput, at least
	smP99Max  = 1.0 // socketmap p99, at most
	pdRateMin = 0.8 // policy delegation throughput, at least
)

// judgeLoad sets the throughput, latency and correctness targets from the
// load steps' results: per round at the target count, the daemon's rate
// over redis's and its p99 over redis's, both from the same round's steps;
// a target takes the median over the rounds, and the detail shows each.
func (b *bench) judgeLoad() {
	c := targetConns(b.o.conns)
	if !b.o.steps["load"] {
		return
	}
	var smRates, smP99s, pdRates []float64
	var floorSM, floorPD, ofFloorSM, ofFloorPD []float64 // bench/floor over redis; the daemon over bench/floor
	var first [3]*result                                 // redis, socketmap and policy of the first round
	for n := 1; ; n++ {
		at := func(step string) *result { return b.find(roundID(step, c, n)) }
		redis, sm, pd := at("redis"), at("socketmap"), at("policy")
		if redis == nil || sm == nil || pd == nil {
			break
		}
		if n == 1 {
			first = [3]*result{redis, sm, pd}
		}
		smRates, pdRates = append(smRates, sm.ratio), append(pdRates, pd.ratio)
		fsm, fpd := at("floor-socketmap"), at("floor-policy")
		if fsm != nil && fpd != nil && fsm.rate() > 0 && fpd.rate() > 0 {
			floorSM, floorPD = append(floorSM, fsm.ratio), append(floorPD, fpd.ratio)
			ofFloorSM, ofFloorPD = append(ofFloorSM, sm.rate()/fsm.rate()), append(ofFloorPD, pd.rate()/fpd.rate())
		}
		// Same connection count, same keys, same load generator,
		// consecutive steps: loadgen's p99 is over the requests of all
		// connections together, for both servers alike. A step without
		// answers has no p99 to pass with.
		p99 := math.Inf(1)
		if sm.int("ops") > 0 && redis.int("ops") > 0 && redis.int("p99_us") > 0 {
			p99 = float64(sm.int("p99_us")) / float64(redis.int("p99_us"))
		}
		smP99s = append(smP99s, p99)
	}
	if first[0] == nil {
		return // SKIP: no redis-server
	}
	redis, sm, pd := first[0], first[1], first[2]
	rounds := func(f string, v []float64) string {
		if len(v) == 1 {
			return ""
		}
		return fmt.Sprintf(", median of %d rounds: %s", len(v), eachRound(f, v))
	}
	first1 := "" // what the figures in brackets are when there are rounds
	if len(smRates) > 1 {
		first1 = "round 1: "
	}
	smRate, smP99, pdRate := median(smRates, true), median(smP99s, false), median(pdRates, true)
	// Each target's rule, for its median and for each round (split).
	smRatePass := func(v float64) bool { return v >= smRateMin }
	smP99Pass := func(v float64) bool { return v <= smP99Max }
	pdRatePass := func(v float64) bool { return v >= pdRateMin }
	b.targets["sm-rate"] = target{ok: smRatePass(smRate),
		detail: fmt.Sprintf("%sx (%s%s vs %s ops/s%s)%s", near(smRate, smRateMin), first1, sm.f["ops_per_s"], redis.f["ops_per_s"], rounds("%.2fx", smRates),
			split(smRates, smRatePass))}
	b.targets["sm-p99"] = target{ok: smP99Pass(smP99),
		detail: fmt.Sprintf("%sx redis's (%s%s µs vs %s µs, p50 %s vs %s µs%s)%s", near(smP99, smP99Max), first1, sm.f["p99_us"], redis.f["p99_us"], sm.f["p50_us"], redis.f["p50_us"], rounds("%.2fx", smP99s),
			split(smP99s, smP99Pass))}
	b.targets["pd-rate"] = target{ok: pdRatePass(pdRate),
		detail: fmt.Sprintf("%sx (%s%s vs %s ops/s%s)%s", near(pdRate, pdRateMin), first1, pd.f["ops_per_s"], redis.f["ops_per_s"], rounds("%.2fx", pdRates),
			split(pdRates, pdRatePass))}
	if len(floorSM) == len(smRates) {
		b.notes = append(b.notes, floorNote(c, floorSM, floorPD, ofFloorSM, ofFloorPD))
	}
}

// floorNote says what bench/floor reached against redis at c connections
// (medians over the rounds, each round's value in brackets when there are
// several) and what the daemon reached of bench/floor's rate.
func floorNote(c int, floorSM, floorPD, ofFloorSM, ofFloorPD []float64) string {
	f := func(v []float64) string {
		s := fmt.Sprintf("%.2fx", median(v, true))
		if len(v) > 1 {
			s += " (" + eachRound("%.2f", v) + ")"
		}
		return s
	}
	return fmt.Sprintf("bench/floor, a Go server that does no work (a goroutine per connection on net.Conn, answering NOTFOUND and DUNNO "+
		"after reading only each request's framing), reached socketmap %s and policy %s redis GET at %d connections: what the protocol and this "+
		"load generator leave a server that answers without deciding; the daemon reached %s and %s of bench/floor's rate", f(floorSM), f(floorPD), c, f(ofFloorSM), f(ofFloorPD))
}

// split notes, when the rounds in v disagree on a target (some pass by
// pass, some fail), how many passed: the median decides, but such a
// verdict may flip from run to run. It returns "" when every round
// agrees.
func split(v []float64, pass func(float64) bool) string {
	n := 0
	for _, x := range v {
		if pass(x) {
			n++
		}
	}
	if n == 0 || n == len(v) {
		return ""
	}
	return fmt.Sprintf(" [rounds split: %d of %d pass]", n, len(v))
}

// eachRound formats every round's value in v with format, space-separated.
func eachRound(format string, v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " ")
}

// near formats a ratio with two decimals, or three when two would round
// it onto its target's threshold ("1.00x" and FAIL for 0.998).
func near(v, threshold float64) string {
	if v != threshold && math.Abs(v-threshold) < 0.005 {
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// median returns the middle value of v, or NaN for none. Of an even
// count's two middle values it takes the one that judges the daemon worse:
// the lower if higher is better (a rate), else the higher (a latency), so
// that one good round cannot outvote a bad one.
func median(v []float64, higherIsBetter bool) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	m := len(s) / 2
	if len(s)%2 == 0 && higherIsBetter {
		m--
	}
	return s[m]
}

// summary prints one line per target of issue 7 (PASS, FAIL, or SKIP
// when the run did not measure it); it reports whether none failed.
func (b *bench) summary() bool {
	b.judgeLoad()
	c := targetConns(b.o.conns)
	mem := thousands(b.o.memEntries)
	if b.o.memEntries <= 0 {
		mem = "1,000,000"
	}
	names := map[string]string{
		"sm-rate":      fmt.Sprintf("socketmap ≥ 1.0x redis GET at %d connections", c),
		"sm-p99":       fmt.Sprintf("socketmap p99 ≤ redis GET p99 at %d connections", c),
		"pd-rate":      fmt.Sprintf("policy delegation ≥ 0.8x redis GET at %d connections", c),
		"errors":       "zero errors and wrong answers (load and memory steps)",
		"reload-time":  "reload: new table answers < 1 s after rename",
		"reload-clean": "reload: zero failed, wrong or stale lookups",
		"mem-rss":      fmt.Sprintf("VmRSS with %s entries < 300 MB", mem),
		"mem-startup":  fmt.Sprintf("start-up with %s entries < 5 s", mem),
	}
	var errs, wrong, checked int64
	for _, r := range b.results {
		if r.id == "reload" {
			continue // has its own target
		}
		errs += r.int("errors")
		wrong += r.int("wrong")
		checked += r.int("ops") + r.int("errors")
	}
	if checked > 0 {
		b.targets["errors"] = target{ok: errs == 0 && wrong == 0,
			detail: fmt.Sprintf("errors=%d wrong=%d of %s checked answers", errs, wrong, thousands(int(checked)))}
	}
	fmt.Fprintf(b.out, "\ntargets of issue 7 (%s in all):\n", time.Since(b.start).Round(time.Second))
	all := true
	for _, id := range targetIDs {
		t, ok := b.targets[id]
		if !ok {
			t = target{skip: true, detail: b.skipReason(id)}
		}
		v := "PASS"
		switch {
		case t.skip:
			v = "SKIP"
		case !t.ok:
			v, all = "FAIL", false
		}
		detail := t.detail
		switch {
		case t.skip:
		case (id == "sm-rate" || id == "sm-p99" || id == "pd-rate") && c != 32:
			detail += " [issue 7 sets it at 32 connections]"
		case (id == "mem-rss" || id == "mem-startup") && b.o.memEntries != 1_000_000:
			detail += " [issue 7 sets it at 1,000,000 entries]"
		}
		if id == "pd-rate" && !t.skip && b.o.unmet != defaultUnmet {
			// Also beside the connection count's note: both depart from
			// what the target is set at.
			detail += fmt.Sprintf(" [-unmet %d; the benchmark's mix is %d]", b.o.unmet, defaultUnmet)
		}
		fmt.Fprintf(b.out, "  %s  %-54s %s\n", v, names[id], detail)
	}
	for _, n := range b.notes {
		fmt.Fprintf(b.out, "note: %s\n", n)
	}
	return all
}

// skipReason says why a target was not measured.
func (b *bench) skipReason(id string) string {
	switch id {
	case "sm-rate", "sm-p99", "pd-rate":
		if !b.o.steps["load"] {
			return "not measured (-steps without load)"
		}
		return "no redis-server to compare with (apt-get install redis-server)"
	case "errors":
		return "no load step ran"
	case "reload-time", "reload-clean":
		return "not measured (-steps without reload)"
	default:
		if b.o.memEntries <= 0 {
			return "not measured (-mem-entries 0)"
		}
		return "not measured (-steps without mem)"
	}
}

var tookRE = regexp.MustCompile(`msg="policy table loaded".* took=(\S+)`)

// lastReloadTook returns the "took" of the daemon's last table load.
func lastReloadTook(logFile string) string {
	data, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	m := tookRE.FindAllSubmatch(data, -1)
	if len(m) < 2 { // the first is the start-up load
		return ""
	}
	return string(m[len(m)-1][1])
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

func readFile(name string) []byte {
	b, _ := os.ReadFile(name)
	return b
}

func dirSize(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// procStatus returns a "kB" field of /proc/PID/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bench is one run of the benchmark.
type bench struct {
	o              options
	out, log       io.Writer
	work, root     string
	daemonBin      string
	loadgenBin     string
	tableDir       string
	cases          string // directory of loadgen -cases files
	smAddr, pdAddr string
	redisAddr      string // "" when redis is skipped
	daemon         server
	redis          *proc
	results        []*result
	targets        []target
	monitorNote    string
	start          time.Time
}

// server is the daemon under test: a tlspolicyd process or, for
// profiling, the same servers inside this process.
type server interface {
	pid() int
	stop() error
}

// result is one load step's loadgen line.
type result struct {
	name  string
	proto string
	conns int
	f     map[string]string
	ratio float64 // to redis GET at the same connection count; 0 = none
}

func (r *result) int(k string) int64 {
	n, _ := strconv.ParseInt(r.f[k], 10, 64)
	return n
}

func (r *result) rate() float64 {
	v, _ := strconv.ParseFloat(r.f["ops_per_s"], 64)
	return v
}

// target is one PASS/FAIL line of the summary.
type target struct {
	name   string
	ok     bool
	skip   bool
	detail string
}

func newBench(ctx context.Context, o options, out, log io.Writer) (*bench, error) {
	b := &bench{o: o, out: out, log: log, start: time.Now()}
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
	return b, nil
}

func (b *bench) close() {
	if b.daemon != nil {
		_ = b.daemon.stop()
	}
	if b.redis != nil {
		_ = b.redis.stop()
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
			if err := b.loadSteps(ctx); err != nil {
				return err
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
	for _, x := range []struct{ out, pkg string }{{b.daemonBin, "./cmd/tlspolicyd"}, {b.loadgenBin, "./bench/loadgen"}} {
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", x.out, x.pkg)
		cmd.Dir = b.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", x.pkg, err, out)
		}
	}
	b.logf("built %s and bench/loadgen", "cmd/tlspolicyd")
	return nil
}

// Cases files.
const (
	casesMixed  = "socketmap-mixed.jsonl"
	casesRedis  = "redis-mixed.jsonl"
	casesPolicy = "policy.jsonl"
	casesReload = "socketmap-reload.jsonl"
	casesMem    = "socketmap-1m.jsonl"
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
	var sm, rd, rl []lookupCase
	for _, l := range mixed {
		sm = append(sm, lookupCase{Key: l.key, Want: l.old})
		rd = append(rd, lookupCase{Key: l.key, Want: l.redis})
		rl = append(rl, lookupCase{Key: l.key, Want: l.old, Next: l.new})
	}
	files := map[string][]lookupCase{casesMixed: sm, casesRedis: rd, casesReload: rl}
	for i, kind := range []string{kindExact, kindParent, kindMiss} {
		var cs []lookupCase
		for _, l := range genLookups(b.o.seed+uint64(i)+1, spec, b.o.lookups, kind) {
			cs = append(cs, lookupCase{Key: l.key, Want: l.old})
		}
		files[casesKind(kind)] = cs
	}
	var pc []lookupCase
	for i, p := range genPolicyCases(b.o.seed, spec, b.o.lookups) {
		pc = append(pc, lookupCase{Key: strconv.Itoa(i), Req: p.req, Want: p.want, Prefix: p.prefix, Contains: p.contains})
	}
	files[casesPolicy] = pc
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

func startProc(name, logFile, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
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
	p, err := startProc("redis-server", filepath.Join(b.work, "redis.log"), bin,
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

// startDaemon starts tlspolicyd serve on the benchmark table (or, when
// profiling, the same servers in this process).
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
		return startProfiles(b.o)
	}
	p, err := b.startServe(filepath.Join(b.work, "daemon.log"), "--table", b.tableDir, "--socketmap", b.smAddr, "--policyd", b.pdAddr)
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
	// The daemon's monitor (engine.Monitor) probes every enforced entry
	// 5 s after listening; measure the steady state after that pass.
	cpu0, _ := procCPU(p.pid())
	waited, err := waitIdle(ctx, p, listening, 6500*time.Millisecond, 180*time.Second)
	if err != nil {
		return err
	}
	cpu1, _ := procCPU(p.pid())
	rss2, _ := procStatus(p.pid(), "VmRSS")
	probes := bytes.Count(readFile(filepath.Join(b.work, "daemon.log")), []byte("component=monitor"))
	b.logf("daemon idle %s after listening: the monitor's first probe pass (%d log lines) used %.1f s of CPU; VmRSS now %.0f MB",
		waited.Round(100*time.Millisecond), probes, cpu1-cpu0, mb(rss2))
	b.monitorNote = fmt.Sprintf("monitor's first pass over %d entries: %.1f s CPU, VmRSS %.0f → %.0f MB", b.o.entries, cpu1-cpu0, mb(rss), mb(rss2))
	return nil
}

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
	return startProc("tlspolicyd", logFile, b.daemonBin, args...)
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

// waitIdle waits until at least minWait has passed since start and the
// process then used under 5 % of a CPU in each of three seconds in a row.
func waitIdle(ctx context.Context, p *proc, start time.Time, minWait, maxWait time.Duration) (time.Duration, error) {
	if d := time.Until(start.Add(minWait)); d > 0 {
		time.Sleep(d)
	}
	prev, err := procCPU(p.pid())
	if err != nil {
		return 0, err
	}
	quiet := 0
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-p.done:
			return 0, fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-time.After(time.Second):
		}
		cur, err := procCPU(p.pid())
		if err != nil {
			return 0, err
		}
		if cur-prev < 0.05 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 3 {
			return time.Since(start), nil
		}
		prev = cur
		if time.Since(start) > maxWait {
			return 0, fmt.Errorf("%s still busy %s after start", p.name, maxWait)
		}
	}
}

// loadgen runs one load step and records its result.
func (b *bench) loadgen(ctx context.Context, name, proto, addr, cases string, conns int, d time.Duration, extra ...string) (*result, error) {
	cmd := exec.CommandContext(ctx, b.loadgenBin, append([]string{"-proto", proto, "-addr", addr, "-c", strconv.Itoa(conns),
		"-d", d.String(), "-cases", filepath.Join(b.cases, cases)}, extra...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("loadgen %s: %w\n%s", name, err, stderr.Bytes())
	}
	r := &result{name: name, proto: proto, conns: conns, f: parseFields(stdout.String())}
	if _, ok := r.f["ops_per_s"]; !ok {
		return nil, fmt.Errorf("loadgen %s: unexpected output %q", name, stdout.String())
	}
	if r.int("errors") > 0 {
		for _, l := range strings.SplitN(strings.TrimSpace(stderr.String()), "\n", 6)[:min(5, strings.Count(stderr.String(), "\n"))] {
			fmt.Fprintf(b.out, "    %s: %s\n", name, l)
		}
	}
	return r, nil
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

const rowFormat = "%-32s %5s %10s %8s %8s %8s %7s %9s\n"

func (b *bench) printHeader() {
	fmt.Fprintf(b.out, "\n"+rowFormat, "step", "conns", "ops/s", "p50_us", "p99_us", "p999_us", "errors", "x redis")
}

func (b *bench) printRow(r *result) {
	ratio := "-"
	if r.ratio > 0 {
		ratio = fmt.Sprintf("%.2fx", r.ratio)
	}
	fmt.Fprintf(b.out, rowFormat, r.name, strconv.Itoa(r.conns), r.f["ops_per_s"], r.f["p50_us"], r.f["p99_us"], r.f["p999_us"], r.f["errors"], ratio)
}

// loadSteps drives redis, socketmap and policy delegation at every
// connection count, interleaved so that drifting background load on the
// machine hits all three alike.
func (b *bench) loadSteps(ctx context.Context) error {
	b.printHeader()
	for _, c := range b.o.conns {
		var redis *result
		if b.redisAddr != "" {
			r, err := b.loadgen(ctx, "redis GET (same keys)", "redis", b.redisAddr, casesRedis, c, b.o.dur)
			if err != nil {
				return err
			}
			redis = r
			b.add(r, nil)
		}
		r, err := b.loadgen(ctx, "socketmap tls_policy mixed", "socketmap", b.smAddr, casesMixed, c, b.o.dur)
		if err != nil {
			return err
		}
		b.add(r, redis)
		r, err = b.loadgen(ctx, "policy delegation (10k rules)", "policy", b.pdAddr, casesPolicy, c, b.o.dur)
		if err != nil {
			return err
		}
		if b.o.rules != 10_000 {
			r.name = fmt.Sprintf("policy delegation (%d rules)", b.o.rules)
		}
		b.add(r, redis)
	}
	if b.o.categories {
		c := slices.Max(b.o.conns)
		redis := b.find("redis", c)
		for _, kind := range []string{kindExact, kindParent, kindMiss} {
			name := map[string]string{kindExact: "socketmap exact hits", kindParent: "socketmap parent-walk hits", kindMiss: "socketmap misses"}[kind]
			r, err := b.loadgen(ctx, name, "socketmap", b.smAddr, casesKind(kind), c, b.o.dur)
			if err != nil {
				return err
			}
			b.add(r, redis)
		}
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

// find returns the first result of proto at conns, or nil: for socketmap
// the mixed lookups, which run before the per-kind ones.
func (b *bench) find(proto string, conns int) *result {
	for _, r := range b.results {
		if r.proto == proto && r.conns == conns {
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
		r, err := b.loadgen(ctx, "socketmap during reload", "socketmap", b.smAddr, casesReload, c, b.o.reloadDur, "-after-new", "1s")
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
		detail += fmt.Sprintf(" (daemon: parse + build took %s, after the %s debounce)", took, "200ms")
	}
	fmt.Fprintf(b.out, "  answers: %s old, %s new, %s wrong, %s stale (old answer to a request sent after the first new answer)\n",
		r.f["old"], r.f["new"], r.f["wrong"], r.f["stale"])
	b.targets = append(b.targets,
		target{name: "reload: new table answers < 1 s after rename", ok: okSwitch, detail: detail},
		target{name: "reload: zero failed, wrong or stale lookups", ok: r.int("errors") == 0 && r.int("wrong") == 0 && r.int("stale") == 0 && r.int("new") > 0,
			detail: fmt.Sprintf("errors=%s wrong=%s stale=%s new=%s", r.f["errors"], r.f["wrong"], r.f["stale"], r.f["new"])},
	)
	return nil
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
	fmt.Fprintf(b.out, "\nmemory and start-up: %d outbound entries + %d inbound rules (%.1f MB of YAML, generated in %s)\n",
		b.o.memEntries, b.o.rules, float64(size)/1e6, time.Since(t0).Round(time.Millisecond))
	if b.o.heapProfile != "" {
		if err := heapProfile(dir, b.o.heapProfile); err != nil {
			return err
		}
		fmt.Fprintf(b.out, "  heap profile of the loaded table written to %s\n", b.o.heapProfile)
	}
	sm, err := freeAddr()
	if err != nil {
		return err
	}
	logFile := filepath.Join(b.work, "daemon-mem.log")
	start := time.Now()
	p, err := b.startServe(logFile, "--table", dir, "--socketmap", sm, "--policyd", "")
	if err != nil {
		return err
	}
	defer p.stop()
	// Measured before the monitor's first probe pass, which starts 5 s
	// after listening (see the note printed with the targets).
	if err := waitListen(ctx, p, 120*time.Second, sm); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logFile)
	}
	startup := time.Since(start)
	rssStart, _ := procStatus(p.pid(), "VmRSS")
	// Some lookups, checked, so the table is used as in production.
	d := min(b.o.dur, time.Second)
	r, err := b.loadgen(ctx, fmt.Sprintf("socketmap, %dk-entry table", b.o.memEntries/1000), "socketmap", sm, casesMem, 8, d)
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
	fmt.Fprintf(b.out, "  start-up (process start to listening): %s (daemon: parse + build %s)\n", startup.Round(time.Millisecond), took)
	fmt.Fprintf(b.out, "  VmRSS %.0f MB right after start, %.0f MB after %s of lookups; VmHWM (peak) %.0f MB\n",
		mb(rssStart), mb(rss), d, mb(hwm))
	b.targets = append(b.targets,
		target{name: fmt.Sprintf("memory: VmRSS with %d entries < 300 MB", b.o.memEntries), ok: rss < 300<<20,
			detail: fmt.Sprintf("%.0f MB (peak %.0f MB)", mb(rss), mb(hwm))},
		target{name: fmt.Sprintf("start-up with %d entries < 5 s", b.o.memEntries), ok: startup < 5*time.Second,
			detail: startup.Round(time.Millisecond).String()},
	)
	return nil
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

// summary prints the targets; it reports whether all passed.
func (b *bench) summary() bool {
	c := slices.Max(b.o.conns)
	redis, sm, pd := b.find("redis", c), b.find("socketmap", c), b.find("policy", c)
	var ts []target
	switch {
	case !b.o.steps["load"]:
	case redis == nil:
		ts = append(ts,
			target{name: fmt.Sprintf("socketmap ≥ 1.0x redis GET at %d connections", c), skip: true, detail: "no redis-server"},
			target{name: fmt.Sprintf("socketmap p99 ≤ redis p99 at %d connections", c), skip: true, detail: "no redis-server"},
			target{name: fmt.Sprintf("policy delegation ≥ 0.8x redis GET at %d connections", c), skip: true, detail: "no redis-server"})
	default:
		ts = append(ts,
			target{name: fmt.Sprintf("socketmap ≥ 1.0x redis GET at %d connections", c), ok: sm.ratio >= 1.0,
				detail: fmt.Sprintf("%.2fx (%s vs %s ops/s)", sm.ratio, sm.f["ops_per_s"], redis.f["ops_per_s"])},
			target{name: fmt.Sprintf("socketmap p99 ≤ redis p99 at %d connections", c), ok: sm.int("p99_us") <= redis.int("p99_us"),
				detail: fmt.Sprintf("%s µs vs %s µs", sm.f["p99_us"], redis.f["p99_us"])},
			target{name: fmt.Sprintf("policy delegation ≥ 0.8x redis GET at %d connections", c), ok: pd.ratio >= 0.8,
				detail: fmt.Sprintf("%.2fx (%s vs %s ops/s)", pd.ratio, pd.f["ops_per_s"], redis.f["ops_per_s"])})
	}
	var errs, wrong int64
	for _, r := range b.results {
		if r.name == "socketmap during reload" {
			continue // has its own target
		}
		errs += r.int("errors")
		wrong += r.int("wrong")
	}
	ts = append(ts, target{name: "zero errors and wrong answers in every load step", ok: errs == 0,
		detail: fmt.Sprintf("errors=%d (wrong answers %d)", errs, wrong)})
	ts = append(ts, b.targets...)
	fmt.Fprintf(b.out, "\ntargets (%s in all):\n", time.Since(b.start).Round(time.Second))
	all := true
	for _, t := range ts {
		v := "PASS"
		switch {
		case t.skip:
			v = "SKIP"
		case !t.ok:
			v, all = "FAIL", false
		}
		fmt.Fprintf(b.out, "  %s  %-52s %s\n", v, t.name, t.detail)
	}
	if b.monitorNote != "" {
		fmt.Fprintf(b.out, "note: measured after the daemon's %s\n", b.monitorNote)
	}
	return all
}

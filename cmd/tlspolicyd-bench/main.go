// Command tlspolicyd-bench measures tlspolicyd on this machine against
// redis-server in one run (bench/README.md): it generates a
// 100,000-entry policy table with 10,000 inbound rules, starts the daemon
// built from this repository and a redis-server loaded with the same keys,
// drives both with bench/loadgen at 1, 8 and 32 connections (every answer
// checked), and bench/floor, a server that answers without deciding, as a
// reference at 32, replaces the table by rename under load, and measures the
// memory and start-up time of a 1,000,000-entry table. The daemon runs as
// shipped, its monitor included (prober confined to loopback). It prints
// rates, latency percentiles, the servers' CPU per request, ratios to
// redis GET, what the daemon spent while idle, and PASS/FAIL per
// performance target; the exit status is 1 if a target failed.
//
//	go run ./cmd/tlspolicyd-bench                        # full run
//	go run ./cmd/tlspolicyd-bench -quick                 # smoke run on smaller tables
//	go run ./cmd/tlspolicyd-bench -profile /tmp/prof     # also CPU and heap profiles of the daemon (--pprof)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	dur         time.Duration // per load step
	reloadDur   time.Duration // the reload step's load
	quick       bool
	conns       []int
	rounds      int // of redis, socketmap and policy at the target count
	unmet       int // per cent of rule-matching policy requests failing the rule
	entries     int
	rules       int
	memEntries  int
	lookups     int // cases per lookup file
	redisBin    string
	work        string
	keep        bool
	categories  bool   // per-kind socketmap rows at the highest connection count
	floor       bool   // the bench/floor reference steps in each round at the target count
	cpuProfile  string // in-process mode
	memProfile  string
	heapProfile string
	profileDir  string          // daemon profiles through --pprof; "" = none
	profileStep map[string]bool // step ids (stepIDs) to take a CPU profile of
	seed        uint64
	steps       map[string]bool // load, reload, mem
	daemonEnv   []string        // KEY=VALUE added to the daemon's environment only
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	b, err := newBench(ctx, o, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "tlspolicyd-bench:", err)
		return 1
	}
	defer b.close()
	if err := b.run(ctx); err != nil {
		fmt.Fprintln(stderr, "tlspolicyd-bench:", err)
		return 1
	}
	if !b.summary() {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("tlspolicyd-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.dur, "d", 5*time.Second, "duration of each load step")
	fs.DurationVar(&o.reloadDur, "reload-d", 15*time.Second, "longest load of the reload step: the table is replaced 1 s in, the load stops 1 s after the first new answer")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: 1 s steps, 1 and 32 connections, one round, no per-kind rows, 10,000 entries, 1,000 rules, 100,000 entries for memory (flags given explicitly win)")
	conns := fs.String("c", "1,8,32", "connection counts, comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of redis, socketmap and policy delegation at the connection count the targets are judged at (32): the first in the run's order, the others after the last count, each round's ratios against its own redis step; the throughput and p99 targets take the median over the rounds")
	fs.IntVar(&o.entries, "entries", 100_000, "outbound entries of the benchmark table")
	fs.IntVar(&o.rules, "rules", 10_000, "inbound rules of the benchmark table")
	fs.IntVar(&o.memEntries, "mem-entries", 1_000_000, "outbound entries of the memory and start-up table (0 skips that step)")
	fs.IntVar(&o.unmet, "unmet", defaultUnmet, "per cent of the policy requests that match a rule (five in six) that fail its requirement and are deferred, rejected or get a PREPEND, each logged and an event; the default 50 blocks about 40 % of all requests")
	fs.IntVar(&o.lookups, "lookups", 20_000, "distinct lookups (and policy requests) per load step, cycled")
	fs.StringVar(&o.redisBin, "redis", "redis-server", "redis-server binary; the redis comparison is skipped if it is not found")
	fs.StringVar(&o.work, "work", "", "working directory for binaries, tables and logs (default: a new temporary directory, removed afterwards)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory")
	fs.BoolVar(&o.floor, "floor", true, "in each round at the target count, also drive bench/floor, a Go server that does no work (NOTFOUND and DUNNO after reading only each request's framing): what the protocol and the load generator leave a server that answers without deciding, against redis on this machine")
	fs.BoolVar(&o.categories, "kinds", true, "also measure exact, parent-walk and miss lookups separately at the highest connection count")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "in-process mode: run the socketmap and policyd servers inside this process (no prober, no monitor) and write a CPU profile of the load steps to `FILE` (prefer -profile)")
	fs.StringVar(&o.memProfile, "memprofile", "", "in-process mode: as -cpuprofile, writing an allocation profile of the load steps to `FILE`")
	fs.StringVar(&o.heapProfile, "heapprofile", "", "load the -mem-entries table inside this process and write its heap profile (in-use memory, sampled every 4 KiB) to `FILE`")
	fs.StringVar(&o.profileDir, "profile", "", "start the daemon with --pprof on loopback and write into `DIR`: a CPU profile of each -profile-step step (cpu-STEP.pprof), the heap after the load steps (heap-load.pprof), and the heap and start-up allocations of the -mem-entries daemon (heap-mem.pprof, allocs-mem.pprof)")
	profileStep := fs.String("profile-step", "", "steps to take a CPU profile of with -profile, comma-separated ids as in the step column: socketmap-N, policy-N, redis-N (the daemon idle), socketmap-exact-N, socketmap-parent-N, socketmap-miss-N, reload (default: socketmap and policy at the highest connection count); without -profile, profiles go to the working directory, which is kept")
	seed := fs.Uint64("seed", 7, "seed of the generated lookups and requests")
	daemonEnv := fs.String("daemon-env", "", "environment variables for the daemon alone (not redis, bench/floor or the load generator), comma-separated KEY=VALUE, e.g. GOMAXPROCS=1 or GOGC=400: for experiments; the run's first line names them")
	steps := fs.String("steps", "load,reload,mem,sources,fleet", "steps to run, comma-separated: load (throughput and latency), reload (table replaced under load), mem (memory and start-up), sources (cached DANE/MTA-STS answers against table hits), fleet (lookups with the shared cache on against off)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tlspolicyd-bench: unexpected argument %q\n", fs.Arg(0))
		return o, errors.New("usage")
	}
	o.seed = *seed
	o.steps = map[string]bool{}
	for _, st := range strings.Split(*steps, ",") {
		switch st = strings.TrimSpace(st); st {
		case "load", "reload", "mem", "sources", "fleet":
			o.steps[st] = true
		default:
			fmt.Fprintf(stderr, "tlspolicyd-bench: -steps: unknown step %q (want load, reload, mem, sources, fleet)\n", st)
			return o, errors.New("usage")
		}
	}
	if *daemonEnv != "" {
		for _, kv := range strings.Split(*daemonEnv, ",") {
			kv = strings.TrimSpace(kv)
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				fmt.Fprintf(stderr, "tlspolicyd-bench: -daemon-env: %q is not KEY=VALUE\n", kv)
				return o, errors.New("usage")
			}
			o.daemonEnv = append(o.daemonEnv, kv)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["d"] {
			o.dur = time.Second
		}
		if !set["c"] {
			*conns = "1,32"
		}
		if !set["kinds"] {
			o.categories = false
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["entries"] {
			o.entries = 10_000
		}
		if !set["rules"] {
			o.rules = 1_000
		}
		if !set["mem-entries"] {
			o.memEntries = 100_000
		}
	}
	for _, s := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "tlspolicyd-bench: -c: bad connection count %q\n", s)
			return o, errors.New("usage")
		}
		o.conns = append(o.conns, n)
	}
	if o.cpuProfile != "" || o.memProfile != "" {
		if o.profileDir != "" || *profileStep != "" {
			fmt.Fprintln(stderr, "tlspolicyd-bench: -cpuprofile/-memprofile run the servers in process; -profile and -profile-step profile the daemon: use one or the other")
			return o, errors.New("usage")
		}
		if len(o.daemonEnv) > 0 {
			fmt.Fprintln(stderr, "tlspolicyd-bench: -daemon-env is for the daemon process; -cpuprofile/-memprofile run the servers in this one")
			return o, errors.New("usage")
		}
	}
	if *profileStep != "" && o.profileDir == "" {
		o.keep = true // profileDir becomes WORK/profiles (newBench)
	}
	if o.profileDir != "" || *profileStep != "" {
		ids := stepIDs(o)
		if *profileStep == "" {
			c := targetConns(o.conns)
			*profileStep = fmt.Sprintf("socketmap-%d,policy-%d", c, c)
		}
		o.profileStep = map[string]bool{}
		for _, id := range strings.Split(*profileStep, ",") {
			id = strings.TrimSpace(id)
			if !slices.Contains(ids, id) {
				fmt.Fprintf(stderr, "tlspolicyd-bench: -profile-step: no step %q in this run (steps: %s)\n", id, strings.Join(ids, ", "))
				return o, errors.New("usage")
			}
			o.profileStep[id] = true
		}
	}
	if o.entries < 100 || o.lookups < 1 || o.dur <= 0 || o.reloadDur < 1500*time.Millisecond || o.rounds < 1 || o.unmet < 0 || o.unmet > 100 {
		fmt.Fprintln(stderr, "tlspolicyd-bench: need -entries ≥ 100, -lookups ≥ 1, -d > 0, -reload-d ≥ 1.5s, -rounds ≥ 1, 0 ≤ -unmet ≤ 100")
		return o, errors.New("usage")
	}
	return o, nil
}

// defaultUnmet is -unmet's default, the request mix the policy target is
// measured with.
const defaultUnmet = 50

// targetConns is the connection count the throughput and p99 targets are
// judged at: the targets' 32 when it is measured, else the highest.
func targetConns(conns []int) int {
	if slices.Contains(conns, 32) {
		return 32
	}
	return slices.Max(conns)
}

// stepIDs lists the ids of the CPU-loaded steps a run with o makes, in
// order: the names -profile-step accepts and the step column shows.
func stepIDs(o options) []string {
	var ids []string
	if o.steps["load"] {
		for _, c := range o.conns {
			ids = append(ids, fmt.Sprintf("redis-%d", c), fmt.Sprintf("socketmap-%d", c), fmt.Sprintf("policy-%d", c))
		}
		if o.categories {
			c := slices.Max(o.conns)
			for _, k := range []string{kindExact, kindParent, kindMiss} {
				ids = append(ids, fmt.Sprintf("socketmap-%s-%d", k, c))
			}
		}
	}
	if o.steps["reload"] {
		ids = append(ids, "reload")
	}
	if o.steps["sources"] {
		c := targetConns(o.conns)
		for n := 1; n <= sourcesRounds; n++ {
			ids = append(ids, roundID("sources-table", c, n), roundID("sources-cached", c, n))
		}
	}
	if o.steps["fleet"] {
		c := targetConns(o.conns)
		for n := 1; n <= fleetRounds; n++ {
			ids = append(ids, roundID("fleet-off", c, n), roundID("fleet-on", c, n))
		}
	}
	return ids
}

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"
)

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

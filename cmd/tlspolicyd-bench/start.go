package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"time"
)

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
	// The monitor (engine.Monitor, on as shipped) begins its first checks
	// 5 s after the start and spreads them over 90 % of probe.interval (an
	// hour): they go on throughout a run. Measure once they have begun
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
	b.logf("daemon %s %s after listening (%.1f %% of a core over the last %s, the monitor's checks begun: %d probes logged); VmRSS %.0f MB",
		state, st.at.Sub(listening).Round(100*time.Millisecond), 100*st.idleCPU, quietWindow, monitorProbes(readFile(filepath.Join(b.work, "daemon.log"))), mb(st.rss))
	return nil
}

// monitorStart is how long after listening the daemon's monitor has begun
// its first checks (engine.Monitor schedules the first 5 s after start).
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
	// DANE and MTA-STS are off but in the sources step, which turns them
	// on: a closed resolver would make each miss a first lookup.
	// No event log: the default is the installed package's
	// /var/lib/tlspolicyd, where a bench run as root left root-owned files.
	args = append([]string{"serve", "--http", "", "--resolver", closed, "--probe-port", "9", "--dane=false", "--mta-sts=false",
		"--event-log", "",
		"--probe-cache", filepath.Join(b.work, fmt.Sprintf("probes-%d.json", time.Now().UnixNano()))}, args...)
	return startProc("tlspolicyd", logFile, b.daemonBin, b.o.daemonEnv, args...)
}

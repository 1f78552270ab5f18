package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

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
	// As in production: once the monitor's first checks have begun (its
	// first Sync has queued the table's enforced entries) and the daemon
	// is quiet, some lookups, checked.
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
	fmt.Fprintf(b.out, "  VmRSS %.0f MB on listening, %.0f MB %s later with the monitor's checks begun (%d probes logged%s), %.0f MB after %s of lookups; VmHWM (peak) %.0f MB\n",
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

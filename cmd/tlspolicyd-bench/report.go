package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tlspolicyd/tlspolicyd/internal/config"
)

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
	probes, sums := monitorProbes(log), monitorSummaries(log)
	since := time.Since(b.ready.at)
	outside := max(since-stepTime, 0)
	pass := "no summary yet"
	if sums > 0 {
		pass = fmt.Sprintf("%d summaries logged", sums)
	}
	pc := config.Default().Probe
	fmt.Fprintf(b.out, "\ndaemon as shipped, monitor on (probe.interval %s, %d workers, ≤ %d probes a minute; probes fail at once on the closed loopback resolver):\n",
		pc.Interval, pc.MonitorWorkers, pc.MaxPerMinute)
	fmt.Fprintf(b.out, "  monitor: %d probes logged since start, %s (one summary line per probe.interval)\n", probes, pass)
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

// monitorSummaries counts the monitor's summary log lines (one per
// probe.interval: "monitor checks", or "monitor behind" when checks are
// overdue).
func monitorSummaries(log []byte) int {
	n := 0
	for _, msg := range []string{"monitor checks", "monitor behind"} {
		n += bytes.Count(log, []byte(`msg="`+msg)) + bytes.Count(log, []byte(`"msg":"`+msg))
	}
	return n
}

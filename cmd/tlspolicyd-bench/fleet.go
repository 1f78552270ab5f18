package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// The fleet step: two daemons with the same table and sources, one linked
// to the run's redis-server through --shared-cache, one not, driven
// alternately with table hits and cached DANE/MTA-STS answers at the
// target connection count. The linked daemon's rate must reach
// fleetRateMin of the other's in the same round: the lookup path never
// waits on the fleet.
const (
	fleetRateMin = 0.95
	fleetRounds  = 3
)

// fleetStep runs the fleet step and sets the fleet-rate target.
func (b *bench) fleetStep(ctx context.Context) error {
	if b.redisAddr == "" {
		b.logf("no redis-server: skipping the fleet step")
		return nil
	}
	c := targetConns(b.o.conns)
	w, table, tableCases, srcCases, err := b.sourcesSetup()
	if err != nil {
		return err
	}
	defer w.stop()
	if err := writeCases(filepath.Join(b.cases, "fleet.jsonl"), append(tableCases, srcCases...)); err != nil {
		return err
	}
	type daemon struct {
		name, addr string
		p          *proc
	}
	var ds []daemon
	for _, d := range []struct {
		name  string
		extra []string
	}{
		{"off", nil},
		{"on", []string{"--shared-cache", "redis://" + b.redisAddr + "/0", "--shared-cache-cluster", "bench", "--shared-cache-node", "bench-on"}},
	} {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		logFile := filepath.Join(b.work, "daemon-fleet-"+d.name+".log")
		args := append([]string{"--table", table, "--socketmap", addr, "--policyd", "",
			"--dane=true", "--mta-sts=true", "--resolver", w.dnsAddr, "--https-ca", w.caFile,
			"--mta-sts-port", strconv.Itoa(w.port), "--allow-private", "--sources-cache", filepath.Join(b.work, "fleet-"+d.name+".json")}, d.extra...)
		p, err := b.startServe(logFile, args...)
		if err != nil {
			return err
		}
		defer func() { _ = p.stop() }()
		if err := waitListen(ctx, p, 30*time.Second, addr); err != nil {
			return fmt.Errorf("%w (log: %s)", err, logFile)
		}
		if err := warmSources(ctx, addr, srcCases); err != nil {
			return fmt.Errorf("fleet step: first lookups: %w (log: %s)", err, logFile)
		}
		ds = append(ds, daemon{d.name, addr, p})
	}
	b.logf("fleet daemons: shared cache off (pid %d), on (pid %d, redis-server %s)", ds[0].p.pid(), ds[1].p.pid(), b.redisAddr)
	b.printHeader()
	ratios, err := b.pairedRounds(ctx, fleetRounds, func(n int) [2]stepSpec {
		var specs [2]stepSpec
		for i, d := range ds {
			specs[i] = stepSpec{id: roundID("fleet-"+d.name, c, n), name: "shared cache " + d.name, proto: "socketmap",
				addr: d.addr, cases: "fleet.jsonl", conns: c, d: b.o.dur, srvPID: d.p.pid(), daemon: true}
		}
		return specs
	})
	if err != nil {
		return err
	}
	m := median(ratios, true)
	b.targets["fleet-rate"] = target{ok: m >= fleetRateMin,
		detail: fmt.Sprintf("median %.2fx the rate without the shared cache (%s)", m, eachRound("%.2fx", ratios))}
	b.notes = append(b.notes, "the fleet step's \"x redis\" column is the ratio to the daemon without the shared cache, same round")
	return nil
}

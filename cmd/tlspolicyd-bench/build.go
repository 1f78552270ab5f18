package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

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

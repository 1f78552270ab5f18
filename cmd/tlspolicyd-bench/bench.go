package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
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
	if b.o.steps["fleet"] && !b.o.steps["load"] && !b.inproc() {
		if err := b.startRedis(ctx); err != nil {
			return err
		}
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
	if b.o.steps["sources"] && !b.inproc() {
		if err := b.sourcesStep(ctx); err != nil {
			return err
		}
	}
	if b.o.steps["fleet"] && !b.inproc() {
		if err := b.fleetStep(ctx); err != nil {
			return err
		}
	}
	return nil
}

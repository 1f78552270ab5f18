package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/store"
	"github.com/tlspolicyd/tlspolicyd/web"
)

func numCPU() int { return runtime.NumCPU() }

// inprocServer is the daemon's request path wired as `tlspolicyd serve`
// wires it (cmd/tlspolicyd/serve.go: engine, reloader, metrics, socketmap
// and policyd servers), inside this process, so that -cpuprofile and
// -memprofile see it with a denser allocation sample than the daemon's.
// It has no prober, monitor, event log or HTTP listener: -profile, which
// profiles the daemon itself through --pprof, is the faithful picture. The
// load generator stays a separate process.
type inprocServer struct {
	sm     *socketmap.Server
	pd     *policyd.Server
	cancel context.CancelFunc
	logf   *os.File
}

func startInproc(ctx context.Context, table, smAddr, pdAddr, logFile string) (*inprocServer, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(lf, nil))
	eng := engine.New(nil, nil, nil, log)
	rl := &engine.Reloader{Path: table, Engine: eng, Logger: log}
	if err := rl.Reload(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("load %s: %w", table, err)
	}
	lsm, err := net.Listen("tcp", smAddr)
	if err != nil {
		lf.Close()
		return nil, err
	}
	lpd, err := net.Listen("tcp", pdAddr)
	if err != nil {
		lsm.Close()
		lf.Close()
		return nil, err
	}
	metrics := web.NewMetrics()
	maxConns := config.Default().MaxConnections
	s := &inprocServer{
		sm:   &socketmap.Server{Handler: eng, Observe: metrics.SocketmapReply, Logger: log.With("server", "socketmap"), MaxConns: maxConns},
		pd:   &policyd.Server{Handler: eng, Observe: metrics.PolicydReply, Logger: log.With("server", "policyd"), MaxConns: maxConns},
		logf: lf,
	}
	wctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() { _ = s.sm.Serve(lsm) }()
	go func() { _ = s.pd.Serve(lpd) }()
	go func() {
		if err := rl.Run(wctx); err != nil {
			log.Error("table watcher stopped", "error", err)
		}
	}()
	return s, nil
}

func (s *inprocServer) pid() int { return os.Getpid() }

func (s *inprocServer) stop() error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := errors.Join(s.sm.Shutdown(ctx), s.pd.Shutdown(ctx))
	s.logf.Close()
	return err
}

var cpuProfileFile *os.File

// startProfiles starts the CPU profile and resets allocation sampling
// bookkeeping before the load steps.
func startProfiles(o options) error {
	if o.memProfile != "" {
		runtime.MemProfileRate = 64 << 10 // a denser sample than the default 512 KiB
	}
	if o.cpuProfile == "" {
		return nil
	}
	f, err := os.Create(o.cpuProfile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	cpuProfileFile = f
	return nil
}

// stopProfiles writes the profiles after the load steps.
func stopProfiles(o options) error {
	if cpuProfileFile != nil {
		pprof.StopCPUProfile()
		if err := cpuProfileFile.Close(); err != nil {
			return err
		}
		cpuProfileFile = nil
		fmt.Printf("CPU profile written to %s\n", o.cpuProfile)
	}
	if o.memProfile != "" {
		if err := writeProfile("allocs", o.memProfile); err != nil {
			return err
		}
		fmt.Printf("allocation profile written to %s\n", o.memProfile)
	}
	return nil
}

// heapProfile loads the table at dir as the daemon does (store.Load, then
// the engine's snapshot) and writes the heap profile of what stays live.
func heapProfile(dir, file string) error {
	rate := runtime.MemProfileRate
	runtime.MemProfileRate = 4 << 10
	defer func() { runtime.MemProfileRate = rate }()
	s, err := store.Load(dir)
	if err != nil {
		return err
	}
	eng := engine.New(s, nil, nil, slog.New(slog.DiscardHandler))
	runtime.GC()
	runtime.GC()
	err = writeProfile("heap", file)
	runtime.KeepAlive(eng)
	return err
}

func writeProfile(name, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

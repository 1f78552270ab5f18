package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/internal/listen"
	"github.com/tlspolicyd/tlspolicyd/internal/logbuf"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/probe"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/web"
)

const defaultConfigPath = "/etc/tlspolicyd/tlspolicyd.yaml"

func configFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: defaultConfigPath, Usage: "daemon configuration `FILE` (YAML); optional when --table is given"},
		&cli.StringFlag{Name: "table", Aliases: []string{"t"}, Usage: "policy table: a YAML `PATH` or a directory of *.yaml/*.yml (a git checkout)"},
	}
}

// loadConfig reads --config and applies every flag that was set on top.
func loadConfig(c *cli.Context) (config.Config, error) {
	path := c.String("config")
	missingOK := !c.IsSet("config")
	cfg, err := config.Load(path, missingOK)
	if err != nil {
		return cfg, err
	}
	str := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	str("table", &cfg.Table)
	str("socketmap", &cfg.Listen.Socketmap)
	str("policyd", &cfg.Listen.Policyd)
	str("http", &cfg.Listen.HTTP)
	str("pprof", &cfg.Listen.Pprof)
	str("socket-mode", &cfg.SocketMode)
	str("resolver", &cfg.Probe.Resolver)
	str("probe-cache", &cfg.Probe.Cache)
	str("log-format", &cfg.Log.Format)
	str("log-level", &cfg.Log.Level)
	str("event-log", &cfg.Log.Events)
	if c.IsSet("max-connections") {
		cfg.MaxConnections = c.Int("max-connections")
	}
	if c.IsSet("probe-port") {
		cfg.Probe.Port = c.Int("probe-port")
	}
	if c.IsSet("event-log-max-mb") {
		cfg.Log.EventsMaxMB = c.Int("event-log-max-mb")
	}
	if c.IsSet("event-log-keep") {
		cfg.Log.EventsKeep = c.Int("event-log-keep")
	}
	return cfg, cfg.Validate()
}

func serveCommand() *cli.Command {
	flags := append(configFlags(),
		&cli.StringFlag{Name: "socketmap", Usage: "socketmap listener `ADDR` (host:port or unix:/path) for smtp_tls_policy_maps (default 127.0.0.1:10041)"},
		&cli.StringFlag{Name: "policyd", Usage: "policy delegation listener `ADDR` for check_policy_service; \"\" disables (default 127.0.0.1:10042)"},
		&cli.StringFlag{Name: "http", Usage: "HTTP listener `ADDR` for /healthz; \"\" disables (default 127.0.0.1:10043)"},
		&cli.StringFlag{Name: "pprof", Usage: "serve Go profiles (net/http/pprof: /debug/pprof/profile, heap, allocs, goroutine) on `ADDR`, a listener of its own, never the --http one; off by default. Use loopback, e.g. 127.0.0.1:6060: profiles reveal the command line and goroutine stacks, and anyone who can connect can make the daemon spend CPU on profiling"},
		&cli.IntFlag{Name: "max-connections", Usage: "connections per socketmap/policyd listener `N` (default 1000)"},
		&cli.StringFlag{Name: "socket-mode", Usage: "permission bits for unix: sockets, octal `MODE` (default 0660)"},
		&cli.StringFlag{Name: "resolver", Usage: "DNS resolver `HOST:PORT` for the prober (default: /etc/resolv.conf)"},
		&cli.IntFlag{Name: "probe-port", Usage: "SMTP `PORT` the prober connects to (default 25)"},
		&cli.StringFlag{Name: "probe-cache", Usage: "probe cache `FILE` (default /var/lib/tlspolicyd/probes.json)"},
		&cli.StringFlag{Name: "log-format", Usage: "log format: text or json"},
		&cli.StringFlag{Name: "log-level", Usage: "log level: debug, info, warn or error"},
		&cli.StringFlag{Name: "event-log", Usage: "JSON-lines event log `FILE`; \"\" disables (default /var/lib/tlspolicyd/events.jsonl)"},
		&cli.IntFlag{Name: "event-log-max-mb", Usage: "rotate the event log past `MIB` MiB (default 10)"},
		&cli.IntFlag{Name: "event-log-keep", Usage: "rotated event log files kept, `N` (default 3): the disk holds at most (1 + N) × --event-log-max-mb MiB of events"},
	)
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon: socketmap (outbound) and policy delegation (inbound) servers",
		Description: `Loads the policy table (exit 1 with file:line errors if it is invalid), then
answers Postfix until SIGTERM/SIGINT. The table reloads by itself when a file in
its directory changes (also when replaced by rename, as git checkout does) and on
SIGHUP; a table with errors never replaces the one serving.

Postfix main.cf:
  smtp_tls_policy_maps = socketmap:inet:127.0.0.1:10041:tls_policy`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			return serve(c.Context, cfg, c.App.ErrWriter)
		},
	}
}

func serve(ctx context.Context, cfg config.Config, logw interface{ Write([]byte) (int, error) }) error {
	// Log lines are queued and written in batches by one goroutine
	// (internal/logbuf): a blocked request's log line costs the request a
	// copy, not a write(2), and a stuck log output drops lines (counted,
	// reported) instead of stalling lookups. Closed last, after every
	// other deferred shutdown step has logged.
	var log *slog.Logger
	out := logbuf.New(logw, logbuf.Options{OnDrop: func(lines uint64) {
		log.Warn("log output too slow: log lines dropped (the events are kept in the event log and metrics)", "lines", lines)
	}})
	defer out.Close()
	log = newLogger(out, cfg.Log.Format, cfg.Log.Level)
	slog.SetDefault(log)
	mode, err := cfg.FileMode()
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}

	// Events: a bounded ring (status page, report, metrics) persisted to an
	// append-only log whose tail is read back, so a restart loses nothing.
	ring := events.NewRing(1000)
	if cfg.Log.Events != "" {
		evlog, err := events.OpenLog(cfg.Log.Events, events.LogOptions{
			MaxSize: int64(cfg.Log.EventsMaxMB) << 20, Keep: cfg.Log.EventsKeep, Logger: log})
		if err != nil {
			log.Warn("event log disabled: events are kept in memory only", "path", cfg.Log.Events, "error", err)
		} else {
			if err := evlog.Attach(ring); err != nil {
				log.Warn("event log: earlier events not restored", "path", cfg.Log.Events, "error", err)
			}
			defer evlog.Close()
		}
	}
	metrics := web.NewMetrics()
	eng := engine.New(nil, nil, ring, log)

	// The prober, its persistent cache (learned policies, status page) and
	// the monitor that re-probes enforced and testing entries.
	prober := newProber(cfg, log)
	probeFn := func(ctx context.Context, target string) (*probe.Result, error) {
		r, err := prober.Probe(ctx, target)
		if r != nil {
			metrics.ProbeVerdict(r.Status)
		}
		return r, err
	}
	// The cache's learn_max_age is the table's: the reloader sets it on
	// every table swapped in, the first one included.
	cache := probe.NewCache(probe.CacheConfig{
		Probe:  probeFn,
		TTL:    cfg.Probe.TTL,
		Logger: log.With("component", "probe-cache"),
		OnEvent: func(e probe.Event) {
			if e.Kind == probe.EventDowngradeRefused {
				ring.Publish(events.Event{Kind: events.LearnedDowngrade, Domain: e.Target, Reason: e.Reason})
			}
			log.Info("probe cache event", "kind", e.Kind, "target", e.Target, "reason", e.Reason)
		},
	})
	rl := &engine.Reloader{Path: cfg.Table, Engine: eng, Logger: log,
		OnReload: func(err error) {
			metrics.Reload(err)
			if err != nil {
				ring.Publish(events.Event{Kind: events.ReloadFailed, Reason: firstLine(err.Error()), Source: cfg.Table})
				return
			}
			// Called after the swap, under the reloader's lock: Store is
			// the table just loaded, and reloads apply in order.
			cache.SetLearnMaxAge(eng.Store().Table().Defaults.LearnMaxAge)
		}}
	if err := rl.Reload(); err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd: cannot start: policy table %s is invalid:\n%v", cfg.Table, err), 1)
	}
	if cfg.Probe.Cache != "" {
		cache.Load(cfg.Probe.Cache)
	}
	eng.SetLearner(cache)
	mon := &engine.Monitor{Engine: eng, Probe: probeFn, Cache: cache, Interval: cfg.Probe.Interval,
		Workers: cfg.Probe.MonitorWorkers, MaxPerMinute: cfg.Probe.MaxPerMinute, Logger: log.With("component", "monitor")}
	eng.OnTesting = mon.Kick

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	type server struct {
		name     string
		serve    func() error
		shutdown func(context.Context) error
	}
	var servers []server

	activated, err := activatedListeners()
	if err != nil {
		return cli.Exit(fmt.Sprintf("tlspolicyd: systemd socket activation: %v", err), 1)
	}
	// open returns the listener for one server: the socket systemd passed
	// under that name, else the configured address (nil when disabled).
	open := func(name, addr string) (net.Listener, error) {
		if l := activated[name]; l != nil {
			log.Info("using socket from systemd", "server", name, "addr", l.Addr().String())
			return l, nil
		}
		if addr == "" {
			return nil, nil
		}
		l, err := listen.Listen(addr, mode)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return l, nil
	}
	if l, err := open("socketmap", cfg.Listen.Socketmap); err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		srv := &socketmap.Server{Handler: metrics.Socketmap(eng), Logger: log.With("server", "socketmap"), MaxConns: cfg.MaxConnections}
		servers = append(servers, server{"socketmap", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "socketmap", "addr", l.Addr().String())
	}
	if l, err := open("policyd", cfg.Listen.Policyd); err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		srv := &policyd.Server{Handler: metrics.Policyd(eng), Logger: log.With("server", "policyd"), MaxConns: cfg.MaxConnections}
		servers = append(servers, server{"policyd", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "policyd", "addr", l.Addr().String())
	}
	if l, err := open("http", cfg.Listen.HTTP); err != nil {
		return cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		srv := &http.Server{Handler: web.New(web.Options{Engine: eng, Probes: cache, Metrics: metrics, Logger: log.With("server", "http")}),
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
		servers = append(servers, server{"http", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "http", "addr", l.Addr().String())
	}
	if len(servers) == 0 {
		return cli.Exit("tlspolicyd: no listener configured (--socketmap, --policyd, --http)", 2)
	}
	if cfg.Listen.Pprof != "" {
		l, err := listen.Listen(cfg.Listen.Pprof, mode)
		if err != nil {
			return cli.Exit("tlspolicyd: pprof: "+err.Error(), 1)
		}
		// No WriteTimeout: /debug/pprof/profile?seconds=N answers after N
		// seconds (and refuses N beyond a WriteTimeout).
		srv := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		servers = append(servers, server{"pprof", func() error { return srv.Serve(l) }, srv.Shutdown})
		if !localAddr(l.Addr()) {
			log.Warn("pprof listener is reachable from other hosts: profiles reveal the command line and goroutine stacks and cost CPU; use a loopback address such as 127.0.0.1:6060",
				"server", "pprof", "addr", l.Addr().String())
		}
		log.Info("listening", "server", "pprof", "addr", l.Addr().String())
	}

	errc := make(chan error, len(servers)+1)
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serve(); err != nil && !errors.Is(err, socketmap.ErrServerClosed) && !errors.Is(err, policyd.ErrServerClosed) && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", s.name, err)
			}
		}()
	}
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	go func() { _ = cache.Run(watchCtx) }()
	go func() { _ = mon.Run(watchCtx) }()
	al := alert.New(alert.Config{MailTo: cfg.Alerts.MailTo, SMTP: cfg.Alerts.SMTP, Webhook: cfg.Alerts.Webhook,
		Interval: cfg.Alerts.Interval, Logger: log.With("component", "alert")})
	alertsDone := make(chan struct{})
	if al.Enabled() {
		ring.Subscribe(al.Notify)
		go func() { defer close(alertsDone); _ = al.Run(watchCtx) }()
	} else {
		close(alertsDone)
	}
	go func() {
		if err := rl.Run(watchCtx); err != nil {
			log.Error("table watcher stopped; reload with SIGHUP", "error", err)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var runErr error
loop:
	for {
		select {
		case <-hup:
			log.Info("SIGHUP: reloading policy table")
			_ = rl.Reload()
		case err := <-errc:
			runErr = err
			break loop
		case <-ctx.Done():
			log.Info("shutting down")
			break loop
		}
	}
	cancelWatch()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.shutdown(sctx); err != nil {
			log.Warn("shutdown", "server", s.name, "error", err)
		}
	}
	wg.Wait()
	<-alertsDone // its last delivery attempt is bounded by its own timeout
	if cfg.Probe.Cache != "" {
		if err := cache.Save(); err != nil {
			log.Warn("saving probe cache", "path", cfg.Probe.Cache, "error", err)
		}
	}
	if runErr != nil {
		return cli.Exit("tlspolicyd: "+runErr.Error(), 1)
	}
	return nil
}

// pprofMux serves the net/http/pprof handlers under /debug/pprof/ and
// nothing else. It is a mux of its own: importing net/http/pprof also
// registers them on http.DefaultServeMux, which no server here uses.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, allocs, goroutine, block, mutex, threadcreate
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// localAddr reports whether a listener's address is reachable from this
// host only: loopback TCP or a unix socket.
func localAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}

// newProber builds the STARTTLS prober from the probe configuration.
func newProber(cfg config.Config, log *slog.Logger) *probe.Prober {
	perMinute := cfg.Probe.MaxPerMinute
	if perMinute == 0 {
		perMinute = -1 // the configuration's "no cap"; probe.Config's 0 is its default
	}
	return probe.New(probe.Config{
		MaxPerMinute: perMinute,
		Resolver:     cfg.Probe.Resolver,
		Port:         cfg.Probe.Port,
		Timeout:      cfg.Probe.Timeout,
		Concurrency:  cfg.Probe.Concurrency,
		HELO:         cfg.Probe.HELO,
		AllowPrivate: cfg.Probe.AllowPrivate,
		TTL:          cfg.Probe.TTL,
		Logger:       log.With("component", "probe"),
	})
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " (and more)"
	}
	return s
}

// activatedListeners returns the sockets systemd passed (LISTEN_FDS, see
// sd_listen_fds(3)) by their FileDescriptorName: socketmap, policyd, http.
// Without socket activation it returns nil.
func activatedListeners() (map[string]net.Listener, error) {
	if os.Getenv("LISTEN_FDS") == "" {
		return nil, nil
	}
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, err
	}
	out := map[string]net.Listener{}
	for name, ls := range named {
		switch name {
		case "socketmap", "policyd", "http":
		default:
			return nil, fmt.Errorf("socket named %q: set FileDescriptorName= to socketmap, policyd or http in the .socket unit", name)
		}
		if len(ls) != 1 || ls[0] == nil {
			return nil, fmt.Errorf("socket %q: want exactly one stream socket, got %d", name, len(ls))
		}
		out[name] = ls[0]
	}
	return out, nil
}

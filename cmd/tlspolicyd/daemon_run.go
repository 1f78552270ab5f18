package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/tlspolicyd/tlspolicyd/alert"
	"github.com/tlspolicyd/tlspolicyd/internal/listen"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// server is one listener's server, as Run starts and stops it.
type server struct {
	name     string
	serve    func() error
	shutdown func(context.Context) error
}

// Run serves until ctx ends, SIGTERM or SIGINT comes, or a server fails;
// then it stops the servers (requests in flight finish, at most 10 s),
// the background work and the alerter, and saves the caches.
func (d *daemon) Run(ctx context.Context) error {
	log := d.log
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The table watcher starts before the listeners open: an edit made
	// once the daemon answers must be seen.
	watchCtx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	go func() {
		if err := d.rl.Run(watchCtx); err != nil {
			log.Error("table watcher stopped; reload with SIGHUP", "error", err)
		}
	}()
	servers, err := d.listen()
	if err != nil {
		return err
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
	maillogDone, schedDone, err := d.startBackground(watchCtx)
	if err != nil {
		return err
	}
	// The alerter outlives the servers: requests still in flight at
	// shutdown publish events too, so it stops (and flushes what is
	// pending) only once they have drained.
	alertCtx, stopAlerts := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAlerts()
	alertsDone := d.startAlerts(alertCtx)
	// SIGHUP reloads on a goroutine of its own: whatever a load does,
	// SIGTERM is still acted on at once.
	go func() {
		for {
			select {
			case <-d.hup:
				log.Info("SIGHUP: reloading policy table")
				_ = d.rl.ReloadContext(watchCtx)
			case <-watchCtx.Done():
				return
			}
		}
	}()
	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
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
	<-maillogDone // the follower saved its position and counts
	stopAlerts()
	<-alertsDone // its last delivery attempt is bounded by its own timeout
	// The scheduler's handlers end with a last write (a check's result,
	// a lease given back): saved below once they are done.
	select {
	case <-schedDone:
	case <-sctx.Done():
		log.Warn("cache refreshes still running at shutdown: saving the cache without their results")
	}
	d.save()
	if runErr != nil {
		return cli.Exit("tlspolicyd: "+runErr.Error(), 1)
	}
	return nil
}

// listen opens the listeners (the sockets systemd passed, else the
// configured addresses) and makes their servers.
func (d *daemon) listen() ([]server, error) {
	cfg, log := d.cfg, d.log
	var servers []server
	activated, err := activatedListeners()
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("tlspolicyd: systemd socket activation: %v", err), 1)
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
		l, err := listen.Listen(addr, d.mode)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return l, nil
	}
	if l, err := open("socketmap", cfg.Listen.Socketmap); err != nil {
		return nil, cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		srv := &socketmap.Server{Handler: d.smHandler, Observe: d.metrics.SocketmapReply, Logger: log.With("server", "socketmap"), MaxConns: cfg.MaxConnections,
			RequestTimeout: requestTimeout(cfg)}
		servers = append(servers, server{"socketmap", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "socketmap", "addr", l.Addr().String())
	}
	if l, err := open("policyd", cfg.Listen.Policyd); err != nil {
		return nil, cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		srv := &policyd.Server{Handler: d.pdHandler, Observe: d.metrics.PolicydReply, Logger: log.With("server", "policyd"), MaxConns: cfg.MaxConnections}
		servers = append(servers, server{"policyd", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "policyd", "addr", l.Addr().String())
	}
	if l, err := open("http", cfg.Listen.HTTP); err != nil {
		return nil, cli.Exit("tlspolicyd: "+err.Error(), 1)
	} else if l != nil {
		l = limitHTTP(l, d.nofile, len(servers)*cfg.MaxConnections, log.With("server", "http"))
		srv := &http.Server{Handler: web.New(web.Options{Engine: d.eng, Started: d.inboundSince, Probes: d.cache, Prober: d.health, Metrics: d.metrics, Sources: webSources(d.src), Fleet: d.fl.web(), Logger: log.With("server", "http"),
			Outbound: d.ml.reporter(), Maillog: cfg.Maillog}),
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: httpIdleTimeout}
		servers = append(servers, server{"http", func() error { return srv.Serve(l) }, srv.Shutdown})
		log.Info("listening", "server", "http", "addr", l.Addr().String())
	}
	if len(servers) == 0 {
		return nil, cli.Exit("tlspolicyd: no listener configured (--socketmap, --policyd, --http)", 2)
	}
	if cfg.Listen.Pprof != "" {
		l, err := listen.Listen(cfg.Listen.Pprof, d.mode)
		if err != nil {
			return nil, cli.Exit("tlspolicyd: pprof: "+err.Error(), 1)
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
	return servers, nil
}

// startBackground starts the cache's scheduler (probes, learned policies,
// sources), the counters' saver, the monitor, the maillog follower, TLS-RPT and the fleet link,
// all until ctx ends. It returns channels closed when the maillog
// follower and the scheduler (its handlers returned) are done.
func (d *daemon) startBackground(ctx context.Context) (maillogDone, schedDone <-chan struct{}, err error) {
	sd := make(chan struct{})
	go func() { defer close(sd); _ = d.sched.Run(ctx) }()
	if d.statsPath != "" {
		go d.eng.Stats().RunSaver(ctx, d.statsPath, d.inboundSince, time.Minute, d.log)
	}
	maillogDone = d.ml.start(ctx)
	if d.cfg.TLSRPT.Enabled {
		rep, err := newTLSRPT(d.cfg, d.src)
		if err != nil {
			return nil, nil, cli.Exit("tlspolicyd: "+err.Error(), 1)
		}
		rep.Logger = d.log.With("component", "tlsrpt")
		rep.OnReported = d.ml.save
		go rep.Run(ctx, d.ml.tracker)
	}
	if d.fl != nil {
		go func() { _ = d.fl.Run(ctx) }()
	}
	return maillogDone, sd, nil
}

// startAlerts starts the alerter until alertCtx ends and returns a
// channel closed when it has stopped.
func (d *daemon) startAlerts(alertCtx context.Context) <-chan struct{} {
	cfg, log := d.cfg, d.log
	acfg := alertConfig(cfg, log)
	if d.fl != nil {
		acfg.Claim = d.fl.Claim // one alert per domain and kind for the whole fleet
	}
	al := alert.New(acfg)
	if from, fqdn := alert.DefaultFrom(); cfg.Alerts.MailTo != "" && cfg.Alerts.From == "" && !fqdn {
		log.Warn("alert mail is sent from an address at a short host name, which relays with reject_non_fqdn_sender refuse: set alerts.from", "from", from)
	}
	alertsDone := make(chan struct{})
	if !al.Enabled() {
		close(alertsDone)
		return alertsDone
	}
	for _, c := range []struct {
		name, help string
		f          func(alert.Stats) uint64
	}{
		{"tlspolicyd_alerts_sent_total", "Alert deliveries that succeeded (one per digest and sink).", func(s alert.Stats) uint64 { return s.Sent }},
		{"tlspolicyd_alerts_failed_total", "Alert delivery attempts that failed (each is retried).", func(s alert.Stats) uint64 { return s.Failed }},
		{"tlspolicyd_alerts_suppressed_total", "Events folded into an earlier alert by the alerts.interval rate limit (sent later as a reminder).", func(s alert.Stats) uint64 { return s.Suppressed }},
		{"tlspolicyd_alerts_dropped_total", "Events never alerted: the alerter's queue or a sink's backlog of undelivered alerts was full (still in the ring, event log and metrics).", func(s alert.Stats) uint64 { return s.Dropped }},
	} {
		d.metrics.CounterFunc(c.name, c.help, func() uint64 { return c.f(al.Stats()) })
	}
	d.ring.Subscribe(al.Notify)
	// Events of the start-up (a damaged probe cache, learned policies
	// dropped while loading it) came before the alerter listened.
	subscribed := time.Now()
	for _, ev := range d.ring.Since(d.started) {
		if ev.Time.Before(subscribed) {
			al.Notify(ev)
		}
	}
	go func() { defer close(alertsDone); _ = al.Run(alertCtx) }()
	return alertsDone
}

// save writes the inbound counters and the cache at shutdown.
func (d *daemon) save() {
	cfg, log := d.cfg, d.log
	if d.statsPath != "" {
		if err := d.eng.Stats().SaveFile(d.statsPath, d.inboundSince, time.Now()); err != nil {
			log.Warn("saving inbound counters", "path", d.statsPath, "error", err)
		}
	}
	if err := d.srcCache.Save(); err != nil {
		log.Warn("saving the cache", "path", cachePath(cfg), "error", err)
	}
}

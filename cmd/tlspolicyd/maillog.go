package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/tlspolicyd/tlspolicyd/engine"
	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/internal/config"
	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/outbound"
	"github.com/tlspolicyd/tlspolicyd/store"
	"github.com/tlspolicyd/tlspolicyd/web"
)

// outboundStateFile is the name of the outbound state (counts, stuck mail
// and the position in Postfix's log) in the state directory.
const outboundStateFile = "outbound.json"

// saveEvery is how often the outbound state is saved while the log is read.
const saveEvery = 10 * time.Second

// outboundStatePath returns where the outbound state is kept: beside the
// event log, else beside the probe cache; "" keeps it in memory only.
func outboundStatePath(cfg config.Config) string {
	for _, p := range []string{cfg.Log.Events, cfg.Probe.Cache} {
		if p != "" {
			return filepath.Join(filepath.Dir(p), outboundStateFile)
		}
	}
	return ""
}

// maillogReader follows Postfix's log into an outbound.Tracker.
type maillogReader struct {
	tracker *outbound.Tracker
	source  string // cfg.Maillog: a path or "journal"
	journal bool
	state   string
	log     *slog.Logger
}

// retryFollow is the wait before following the log again after it failed
// (a file that cannot be opened, journalctl missing).
const retryFollow = 30 * time.Second

// follower returns a follower resuming where the tracker's counts end.
func (m *maillogReader) follower() logfollow.Follower {
	start := m.tracker.Resume(m.source)
	if m.journal {
		return &logfollow.Journal{Start: start, Logger: m.log}
	}
	return &logfollow.File{Path: m.source, Start: start, Logger: m.log}
}

// newMaillog returns the follower of cfg.Maillog, or nil when it is off.
// Its state is loaded (a state file that cannot be read is logged and the
// log is then read from its end).
func newMaillog(cfg config.Config, log *slog.Logger, ring *events.Ring, eng *engine.Engine, metrics *web.Metrics) *maillogReader {
	if cfg.Maillog == "" {
		return nil
	}
	log = log.With("component", "maillog")
	m := &maillogReader{source: cfg.Maillog, journal: cfg.Maillog == "journal", state: outboundStatePath(cfg), log: log}
	m.tracker = outbound.New(outbound.Config{Publish: ring.Publish, Policy: outboundPolicy(eng), Interval: cfg.Alerts.Interval, Logger: log})
	if m.state != "" {
		if err := m.tracker.Load(m.state); err != nil {
			log.Warn("outbound state not restored: counting starts afresh at the end of the log", "error", err)
		}
	}
	metrics.CounterFunc("tlspolicyd_maillog_lines_total", "Lines read from Postfix's log (maillog).", m.tracker.Lines)
	metrics.CounterFunc("tlspolicyd_maillog_deliveries_total", "Delivery status lines (one per recipient and attempt) read from Postfix's log.", m.tracker.Deliveries)
	metrics.CounterFunc("tlspolicyd_maillog_unparsed_tls_lines_total",
		"Lines of Postfix's log that look like smtp TLS lines but do not parse (a Postfix version whose log this daemon does not know).", m.tracker.Malformed)
	return m
}

// save writes the outbound state now (e.g. once TLS-RPT reports are sent,
// so that a restart does not send them again).
func (m *maillogReader) save() {
	if m.state == "" {
		return
	}
	if err := m.tracker.Save(m.state); err != nil {
		m.log.Warn("saving the outbound state", "path", m.state, "error", err)
	}
}

// reporter returns the tracker as web.Options wants it: an untyped nil
// when the log is not followed.
func (m *maillogReader) reporter() interface {
	Report(since time.Time) []outbound.DomainReport
} {
	if m == nil {
		return nil
	}
	return m.tracker
}

// start follows the log until ctx ends; the channel closes once the state
// is saved.
func (m *maillogReader) start(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if m == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		for {
			err := m.tracker.Follow(ctx, m.follower(), m.journal, m.state, saveEvery)
			if ctx.Err() != nil {
				return
			}
			m.log.Error("following Postfix's log failed; trying again", "path", m.source, "error", err, "retry_in", retryFollow)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryFollow):
			}
		}
	}()
	return done
}

// outboundPolicy names the policy a domain gets and where it comes from
// (the table's file:line, DANE, MTA-STS, learned, default), for the
// stuck-mail alerts. The sources' lookups are bounded.
func outboundPolicy(eng *engine.Engine) func(domain string) (policy, source string) {
	return func(domain string) (string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ans, err := eng.ResolveContext(ctx, store.MapPolicy, domain)
		if err != nil || !ans.Found {
			return "", ""
		}
		switch ans.Step {
		case store.StepLearned:
			return ans.Data, "learned (defaults.learn: enforce)"
		case store.StepDefault:
			return ans.Data, "default (defaults.outbound, " + ans.Source.String() + ")"
		case store.StepExact, store.StepParent:
			return ans.Data, "table " + ans.Source.String()
		case engine.StepDANE:
			return ans.Data, "DANE (" + ans.Why + ")"
		case engine.StepMTASTS:
			return ans.Data, "MTA-STS (" + ans.Why + ")"
		}
		return ans.Data, string(ans.Step)
	}
}

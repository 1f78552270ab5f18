// Package alert tells the postmaster about TLS policy events (package
// events): a digest mail sent with go-smtp's client through a relay to
// alerts.mail_to, and/or a JSON POST to alerts.webhook (README: "Knowing
// when enforcement blocks mail").
//
// The texts are modelled on the notices hosted mail services send ("We are
// unable to accept messages from the following domain because the domain's
// mail server did not establish a TLS connection … Recommended action:
// contact the email administrator for the domain"): which domain, which
// policy, what failed, what to do.
//
// Alerting never slows mail down: Notify hands an event over without
// blocking (dropping and counting it when the queue is full), events are
// gathered for a short while into one digest, there is at most one alert
// per domain and kind per Interval (further events are counted and
// summarised in a reminder once the interval is over, or at shutdown), and
// a failing relay or webhook is retried with exponential back-off in the
// background.
package alert

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
)

// Defaults of Config.
const (
	DefaultSMTP       = "127.0.0.1:25"
	DefaultInterval   = time.Hour
	DefaultDelay      = time.Minute
	DefaultTimeout    = 30 * time.Second
	DefaultMinBackoff = 10 * time.Second
	DefaultMaxBackoff = 15 * time.Minute
	DefaultQueue      = 1024
)

// maxKeys bounds the rate-limit state: inbound events name sender domains,
// which come from the internet. Past it, new domains share one key per kind.
const maxKeys = 10000

// shutdownTimeout bounds the last delivery attempt at shutdown (or
// Config.Timeout if shorter): a dead relay or webhook must not hold up the
// daemon's exit.
const shutdownTimeout = 5 * time.Second

// maxPending bounds the alerts a failing sink keeps for its next attempt.
const maxPending = 1000

// Config configures a Notifier. Zero values take the defaults.
type Config struct {
	// MailTo is the address (or comma-separated addresses) digests are
	// mailed to; "" disables mail.
	MailTo string
	// SMTP is the relay, host:port (default 127.0.0.1:25). The relay is
	// expected to be local: no STARTTLS, no authentication.
	SMTP string
	// From is the sender of the mail, envelope and header (default
	// tlspolicyd@<Hostname>, the alerts.from setting).
	From string
	// Webhook is a URL that receives every digest as a JSON POST; ""
	// disables it.
	Webhook string
	// Interval: at most one alert per domain and kind per Interval
	// (default 1h).
	Interval time.Duration
	// Logger receives delivery failures (default slog.Default()).
	Logger *slog.Logger

	// Hostname names this daemon in texts and EHLO (default FQDN()).
	Hostname string
	// Delay is how long events are gathered into one digest after the
	// first one (default 1m).
	Delay time.Duration
	// Timeout bounds one delivery attempt (default 30s).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts after a
	// failure; it doubles from one to the other (defaults 10s, 15m).
	MinBackoff, MaxBackoff time.Duration
	// Queue is how many events Notify buffers before dropping (default 1024).
	Queue int
	// HTTPClient posts to the webhook (default: a client with Timeout).
	HTTPClient *http.Client
	// Claim, when set, asks the fleet whether this node sends the alert
	// of a kind and domain for the next interval (one node of a fleet
	// does); false folds the event away as sent elsewhere.
	Claim func(ctx context.Context, kind, domain string, interval time.Duration) bool
}

// Alert is one alert: an event plus how many more of its domain and kind
// it stands for. It is what the webhook receives (the event's fields,
// flattened, and these).
type Alert struct {
	events.Event
	// Repeats is how many events of this domain and kind it stands for,
	// itself included.
	Repeats int `json:"repeats"`
	// FirstSeen is when the first of them happened.
	FirstSeen time.Time `json:"first_seen"`
	// Title is a one-line summary, Explanation what it means and
	// RecommendedAction what the postmaster should do.
	Title             string `json:"title"`
	Explanation       string `json:"explanation"`
	RecommendedAction string `json:"recommended_action"`
}

// Notifier delivers alerts. Use New, then Run in a goroutine, and Notify
// (e.g. as an events.Ring subscriber) for every event.
type Notifier struct {
	cfg   Config
	log   *slog.Logger
	in    chan events.Event
	sinks []*sink

	dropped    atomic.Uint64
	queueDrops atomic.Uint64 // the part of dropped Notify refused
	dropsShown atomic.Uint64 // queueDrops when last logged
	dropsAt    atomic.Int64  // when queue drops were last logged, Unix ns
	suppressed atomic.Uint64
	// claimedElsewhere counts alerts another node of the fleet sends.
	claimedElsewhere atomic.Uint64
	sent             atomic.Uint64
	failed           atomic.Uint64

	running sync.Mutex // one Run at a time
}

// New returns a Notifier for cfg. It sends nothing until Run is called.
func New(cfg Config) *Notifier {
	if cfg.SMTP == "" {
		cfg.SMTP = DefaultSMTP
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = FQDN()
	}
	if cfg.From == "" {
		cfg.From = "tlspolicyd@" + cfg.Hostname
	}
	if cfg.Delay <= 0 {
		cfg.Delay = DefaultDelay
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.Timeout}
	}
	a := &Notifier{cfg: cfg, log: cfg.Logger.With("component", "alert"), in: make(chan events.Event, cfg.Queue)}
	if cfg.MailTo != "" {
		a.sinks = append(a.sinks, &sink{name: "mail", send: a.sendMail})
	}
	if cfg.Webhook != "" {
		a.sinks = append(a.sinks, &sink{name: "webhook", send: a.postWebhook})
	}
	return a
}

// Enabled reports whether alerts go anywhere (mail or webhook configured).
func (a *Notifier) Enabled() bool { return len(a.sinks) > 0 }

// Notify hands e to the alerter. It never blocks: when the queue is full
// (Run is not keeping up or not running) the event is dropped and counted.
// Its signature is the one events.Ring.Subscribe wants.
func (a *Notifier) Notify(e events.Event) {
	if !a.Enabled() {
		return
	}
	select {
	case a.in <- e:
	default:
		a.dropped.Add(1)
		n := a.queueDrops.Add(1)
		now := time.Now().UnixNano()
		if last := a.dropsAt.Load(); now-last >= int64(dropLogEvery) && a.dropsAt.CompareAndSwap(last, now) {
			a.logDrops(n)
		}
	}
}

// dropLogEvery is the least time between two log lines about events
// Notify dropped: a flood drops thousands a second, each counted (Stats).
const dropLogEvery = time.Minute

// logDrops logs the events Notify dropped since the last report, n in all.
func (a *Notifier) logDrops(n uint64) {
	if prev := a.dropsShown.Swap(n); n > prev {
		a.log.Warn("alert queue full: events dropped, not alerted (the event log, status page and metrics have them)",
			"dropped", n-prev, "dropped_total", n)
	}
}

// Stats are the alerter's counters since it started.
type Stats struct {
	Dropped    uint64 // events Notify could not queue
	Suppressed uint64 // events folded into an earlier alert by the rate limit
	Sent       uint64 // successful deliveries (one per digest and sink)
	Failed     uint64 // failed delivery attempts (each is retried)
	// ClaimedElsewhere counts alerts left to another node of the fleet.
	ClaimedElsewhere uint64
}

// Stats returns the alerter's counters.
func (a *Notifier) Stats() Stats {
	return Stats{Dropped: a.dropped.Load(), Suppressed: a.suppressed.Load(), Sent: a.sent.Load(), Failed: a.failed.Load(),
		ClaimedElsewhere: a.claimedElsewhere.Load()}
}

// limit is the rate-limit state of one domain and kind.
type limit struct {
	opened     time.Time    // when the current interval began (the last alert)
	suppressed int          // events since then not alerted
	first      time.Time    // the first of them
	last       events.Event // the latest of them
}

// Run gathers events into digests and delivers them until ctx ends; then
// it makes one last attempt, bounded by shutdownTimeout, to deliver what
// is pending: the digest being gathered, the events still queued and a
// reminder of every event the rate limit held back. It returns nil.
//
// Cancel ctx only once nothing publishes events any more (the servers have
// drained): an event notified later is queued to a channel nobody reads.
func (a *Notifier) Run(ctx context.Context) error {
	a.running.Lock()
	defer a.running.Unlock()
	if !a.Enabled() {
		<-ctx.Done()
		return nil
	}
	// The sinks stop when quit closes, after the last batch was handed to
	// them, not when ctx ends: that batch gets its last attempt.
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range a.sinks {
		s.init()
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.runSink(ctx, quit, s)
		}()
	}
	defer wg.Wait()
	defer close(quit)
	defer func() { a.logDrops(a.queueDrops.Load()) }() // what the last minute dropped

	limits := map[string]*limit{}
	var batch []*Alert
	byKey := map[string]*Alert{} // the alerts of batch, by key
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	tick := time.NewTicker(min(a.cfg.Interval/4, time.Minute))
	defer tick.Stop()

	flush := func() {
		if len(batch) == 0 {
			return
		}
		out := make([]Alert, len(batch))
		for i, al := range batch {
			out[i] = *al
		}
		for _, s := range a.sinks {
			s.add(out, a)
		}
		batch, byKey = nil, map[string]*Alert{}
	}
	add := func(al *Alert, key string) {
		if len(batch) == 0 {
			gather.Reset(a.cfg.Delay)
		}
		describe(al)
		batch = append(batch, al)
		byKey[key] = al
	}

	handle := func(e events.Event) {
		now := time.Now()
		if e.Time.IsZero() {
			e.Time = now
		}
		key := string(e.Kind) + "\x00" + e.Domain
		l := limits[key]
		if l == nil && len(limits) >= maxKeys {
			key = string(e.Kind) + "\x00*"
			e.Domain = "(many domains)"
			l = limits[key]
		}
		if al := byKey[key]; al != nil { // still gathering: fold it in
			al.Repeats++
			a.suppressed.Add(1)
			return
		}
		if l != nil && now.Sub(l.opened) < a.cfg.Interval {
			if l.suppressed == 0 {
				l.first = e.Time
			}
			l.suppressed++
			l.last = e
			a.suppressed.Add(1)
			return
		}
		if a.cfg.Claim != nil && !a.cfg.Claim(ctx, string(e.Kind), e.Domain, a.cfg.Interval) {
			limits[key] = &limit{opened: now} // another node of the fleet sends it
			a.claimedElsewhere.Add(1)
			return
		}
		al := &Alert{Event: e, Repeats: 1, FirstSeen: e.Time}
		if l != nil && l.suppressed > 0 { // the interval is over: count what it held back
			al.Repeats += l.suppressed
			al.FirstSeen = l.first
		}
		limits[key] = &limit{opened: now}
		add(al, key)
	}

	for {
		select {
		case <-ctx.Done():
			// Shutting down: what is queued and what the rate limit held
			// back would be lost with this process, so it all goes into
			// the last digest, reminders before their interval is over.
			// The sinks' last attempt is bounded (shutdownTimeout).
			for drained := false; !drained; {
				select {
				case e := <-a.in:
					handle(e)
				default:
					drained = true
				}
			}
			var held []*limit
			for _, l := range limits {
				if l.suppressed > 0 {
					held = append(held, l)
				}
			}
			slices.SortFunc(held, func(x, y *limit) int { return x.first.Compare(y.first) })
			for _, l := range held {
				al := &Alert{Event: l.last, Repeats: l.suppressed, FirstSeen: l.first}
				describe(al)
				batch = append(batch, al)
			}
			flush()
			return nil
		case e := <-a.in:
			handle(e)
		case <-gather.C:
			flush()
		case <-tick.C:
			// An interval is over: remind of what it suppressed, forget
			// what stayed quiet.
			now := time.Now()
			for key, l := range limits {
				if now.Sub(l.opened) < a.cfg.Interval {
					continue
				}
				if l.suppressed == 0 {
					delete(limits, key)
					continue
				}
				limits[key] = &limit{opened: now}
				add(&Alert{Event: l.last, Repeats: l.suppressed, FirstSeen: l.first}, key)
			}
		}
	}
}

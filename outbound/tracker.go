package outbound

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/logfollow"
	"github.com/tlspolicyd/tlspolicyd/maillog"
)

// Defaults of Config.
const (
	DefaultDays       = 35
	DefaultMaxDomains = 10000
	DefaultInterval   = time.Hour
	// stuckExpiry drops a message not seen deferred again for this long
	// (Postfix's maximal_queue_lifetime is 5 days; a message removed from
	// the queue by hand is never logged again).
	stuckExpiry = 6 * 24 * time.Hour
	// maxStuckMsgs bounds the messages remembered per stuck domain.
	maxStuckMsgs = 10000
)

// OtherDomain counts the deliveries of domains first seen on a day that
// already has MaxDomains rows.
const OtherDomain = "(other)"

// Config configures a Tracker.
type Config struct {
	// Publish receives the stuck-mail and delivered-again events.
	Publish func(events.Event)
	// Policy names the outbound policy that applies to a domain and where
	// it comes from (a table's file:line, learned, default), for alerts.
	Policy func(domain string) (policy, source string)
	// Interval is the least time between two stuck-mail events of a
	// domain while its count grows (the alerter de-duplicates too).
	Interval time.Duration
	// Days of counts kept (default 35); MaxDomains rows a day (default 10000).
	Days, MaxDomains int
	Logger           *slog.Logger
	// Now gives the year of syslog stamps without one (default time.Now).
	Now func() time.Time
}

// stuck is a domain whose mail is deferred by TLS policy.
type stuck struct {
	Since    time.Time            `json:"since"`
	Reason   string               `json:"reason"` // the latest deferral's text
	Msgs     map[string]time.Time `json:"msgs"`   // "QID rcpt" → its latest deferral
	Notified time.Time            `json:"notified,omitempty"`
	Count    int                  `json:"count,omitempty"` // messages at the last event
}

// Tracker counts deliveries and watches for stuck mail. Safe for
// concurrent use.
type Tracker struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	days     map[string]map[string]*Counts // UTC day "2006-01-02" → domain → counts
	stuck    map[string]*stuck
	pos      logfollow.Position
	source   string // what pos is a position in: the file's path or "journal"
	reported string // the last day TLS-RPT reports were sent for
	dirty    bool
	// corr ties TLS lines to status lines; under mu, so that Save sees
	// it consistent with pos.
	corr *maillog.Correlator

	lines, deliveries, malformed atomic.Uint64
}

// New returns an empty Tracker.
func New(cfg Config) *Tracker {
	if cfg.Days <= 0 {
		cfg.Days = DefaultDays
	}
	if cfg.MaxDomains <= 0 {
		cfg.MaxDomains = DefaultMaxDomains
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Publish == nil {
		cfg.Publish = func(events.Event) {}
	}
	return &Tracker{cfg: cfg, log: cfg.Logger, days: map[string]map[string]*Counts{}, stuck: map[string]*stuck{}, corr: maillog.NewCorrelator()}
}

// Lines, Deliveries and Malformed count the log lines read, the status
// lines among them, and the TLS-looking lines that did not parse.
func (t *Tracker) Lines() uint64      { return t.lines.Load() }
func (t *Tracker) Deliveries() uint64 { return t.deliveries.Load() }
func (t *Tracker) Malformed() uint64  { return t.malformed.Load() }

// Observe feeds one parsed line (ok false: a line that is no log record)
// to the correlator, counts what it gave and records the log position
// past it.
func (t *Tracker) Observe(l maillog.Line, ok bool, pos logfollow.Position) {
	t.lines.Add(1)
	var ev *pending
	t.mu.Lock()
	var r maillog.Result
	if ok {
		r = t.corr.Feed(l)
	}
	t.pos, t.dirty = pos, true
	if d := r.Delivery; d != nil && d.Domain != "" {
		t.deliveries.Add(1)
		t.countLocked(d)
		ev = t.watchLocked(d)
	}
	t.mu.Unlock()
	if r.Malformed {
		t.malformed.Add(1)
	}
	// The policy is looked up outside the lock: a source may take time.
	if ev != nil {
		t.cfg.Publish(ev.event(t.policy(ev.d.Domain)))
	}
}

// pending is an event to publish, with a copy of the stuck state it is about.
type pending struct {
	d  *maillog.Delivery
	st stuck
	n  int
	fn func(d *maillog.Delivery, st *stuck, n int, pol, src string) events.Event
}

func (p *pending) event(pol, src string) events.Event { return p.fn(p.d, &p.st, p.n, pol, src) }

func (t *Tracker) countLocked(d *maillog.Delivery) {
	day := d.Time.UTC().Format(time.DateOnly)
	rows := t.days[day]
	if rows == nil {
		rows = map[string]*Counts{}
		t.days[day] = rows
		t.pruneLocked(d.Time)
	}
	dom := d.Domain
	c := rows[dom]
	if c == nil {
		if len(rows) >= t.cfg.MaxDomains {
			dom = OtherDomain
			c = rows[dom]
		}
		if c == nil {
			c = &Counts{}
			rows[dom] = c
		}
	}
	c.add(d)
}

// pruneLocked drops days older than Days before now.
func (t *Tracker) pruneLocked(now time.Time) {
	oldest := now.UTC().AddDate(0, 0, -t.cfg.Days).Format(time.DateOnly)
	for day := range t.days {
		if day < oldest {
			delete(t.days, day)
		}
	}
}

// watchLocked updates the stuck state of d's domain and returns the
// events to publish.
func (t *Tracker) watchLocked(d *maillog.Delivery) *pending {
	key := d.QueueID + " " + d.To
	st := t.stuck[d.Domain]
	switch {
	case d.Status == "deferred" && d.Reason.TLSPolicy():
		if st == nil {
			if len(t.stuck) >= t.cfg.MaxDomains {
				return nil
			}
			st = &stuck{Since: d.Time, Msgs: map[string]time.Time{}}
			t.stuck[d.Domain] = st
		}
		if len(st.Msgs) < maxStuckMsgs || !st.Msgs[key].IsZero() {
			st.Msgs[key] = d.Time
		}
		st.Reason = d.Text
		for k, at := range st.Msgs {
			if d.Time.Sub(at) > stuckExpiry {
				delete(st.Msgs, k)
			}
		}
		if n := len(st.Msgs); st.Notified.IsZero() || n > st.Count && d.Time.Sub(st.Notified) >= t.cfg.Interval {
			st.Notified, st.Count = d.Time, n
			return &pending{d: d, st: stuck{Since: st.Since, Reason: st.Reason}, n: n, fn: stuckEvent}
		}
	case d.Status == "sent" && st != nil:
		delete(t.stuck, d.Domain)
		if !st.Notified.IsZero() {
			return &pending{d: d, st: stuck{Since: st.Since, Reason: st.Reason}, n: len(st.Msgs), fn: deliveredEvent}
		}
	case d.Status != "deferred" && st != nil: // bounced, expired
		delete(st.Msgs, key)
		if len(st.Msgs) == 0 {
			delete(t.stuck, d.Domain)
		}
	}
	return nil
}

const timeLayout = "2006-01-02 15:04:05 MST"

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func (t *Tracker) policy(domain string) (policy, source string) {
	if t.cfg.Policy == nil {
		return "", ""
	}
	return t.cfg.Policy(domain)
}

func stuckEvent(d *maillog.Delivery, st *stuck, n int, pol, src string) events.Event {
	why := st.Reason
	if pol != "" {
		why += "; policy " + pol
	}
	if src != "" {
		why += ", " + src
	}
	return events.Event{Kind: events.OutboundDeferred, Domain: d.Domain, Rule: pol, Source: src, Action: "deferred",
		Reason: fmt.Sprintf("%s to %s deferred by TLS policy since %s (%s)",
			plural(n, "message", "messages"), d.Domain, st.Since.UTC().Format(timeLayout), why)}
}

func deliveredEvent(d *maillog.Delivery, st *stuck, _ int, pol, src string) events.Event {
	how := "in clear text"
	if d.TLS != nil {
		how = fmt.Sprintf("over %s (%s)", d.TLS.Protocol, d.TLS.Trust)
	}
	return events.Event{Kind: events.OutboundDelivered, Domain: d.Domain, Rule: pol, Source: src, Action: "sent",
		Reason: fmt.Sprintf("mail to %s delivered again %s to %s; it was deferred by TLS policy since %s (%s)",
			d.Domain, how, d.Relay, st.Since.UTC().Format(timeLayout), st.Reason)}
}

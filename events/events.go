// Package events records the decisions a postmaster must hear about: mail
// blocked (or, in testing mode, that would be blocked) by inbound
// enforcement, outbound targets failing their probe, learned-policy
// downgrade attempts, learned policies dropped early from a full probe
// cache, certificates of enforced destinations about to expire, failed
// reloads. Events go to a bounded in-memory ring (for the
// status page and reports), to any number of subscribers (metrics, alerts)
// and, through a Log, to an append-only JSON-lines file rotated by size, so
// that a restart loses nothing: at start the tail of the file is loaded
// back into the ring (Log.Attach).
package events

import (
	"sync"
	"time"
)

// Kind names what happened.
type Kind string

// Event kinds.
const (
	InboundBlocked      Kind = "inbound_blocked"       // an enforced inbound rule deferred or rejected mail
	InboundWouldBlock   Kind = "inbound_would_block"   // a testing inbound rule would have
	OutboundProbeFailed Kind = "outbound_probe_failed" // an enforced or testing destination fails its probe
	BackupMXFailed      Kind = "backup_mx_failed"      // an MX of an enforced or testing destination cannot meet the policy, but Postfix delivers through another
	LearnedDowngrade    Kind = "learned_downgrade"     // a learned STARTTLS destination stopped offering it
	LearnedEvicted      Kind = "learned_evicted"       // a learned encrypt was dropped before learn_max_age: the probe cache was full
	CertExpiring        Kind = "cert_expiring"         // an enforced verify/secure destination's certificate expires soon
	ReloadFailed        Kind = "reload_failed"         // a table edit was rejected; the old table keeps serving
	CacheCorrupt        Kind = "cache_corrupt"         // a state file (the probe cache) was damaged at start: kept aside, what parsed salvaged
	OutboundDeferred    Kind = "outbound_deferred"     // Postfix's log: mail to a domain really deferred by TLS policy
	OutboundDelivered   Kind = "outbound_delivered"    // Postfix's log: mail to such a domain delivered again
	ProberBlind         Kind = "prober_blind"          // every recent probe failed temporarily (DNS or network down): enforced entries go unchecked
	FleetLinkDown       Kind = "fleet_link_down"       // the shared cache (Redis/Valkey) cannot be reached: this node learns alone
	FleetLinkUp         Kind = "fleet_link_up"         // the shared cache is reachable again after being down
	SourceEvicted       Kind = "source_evicted"        // a DANE or MTA-STS policy in force was dropped early: the source cache was full
)

// Event is one decision that blocks or would block mail.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   Kind      `json:"kind"`
	Domain string    `json:"domain,omitempty"` // the partner domain concerned
	Rule   string    `json:"rule,omitempty"`   // rule name or table key
	Source string    `json:"source,omitempty"` // file:line of the rule
	Action string    `json:"action,omitempty"` // what was (or would be) answered
	Reason string    `json:"reason"`
	Client string    `json:"client,omitempty"`
	Sender string    `json:"sender,omitempty"`
}

// Ring is a bounded, concurrency-safe log of recent events that also fans
// them out to subscribers. Publishing never blocks on a subscriber.
type Ring struct {
	mu    sync.Mutex
	buf   []Event
	next  int
	full  bool
	total map[Kind]uint64
	subs  []func(Event)
	log   *Log // the event log attached (Log.Attach), if any: see Scan
}

// NewRing returns a ring keeping the last size events.
func NewRing(size int) *Ring {
	if size < 1 {
		size = 1
	}
	return &Ring{buf: make([]Event, size), total: map[Kind]uint64{}}
}

// Subscribe registers f to be called with every later event. f must not block.
func (r *Ring) Subscribe(f func(Event)) {
	r.mu.Lock()
	r.subs = append(r.subs, f)
	r.mu.Unlock()
}

// Publish records e (setting Time if zero) and hands it to subscribers.
func (r *Ring) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.mu.Lock()
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
	r.total[e.Kind]++
	subs := r.subs
	r.mu.Unlock()
	for _, f := range subs {
		f(e)
	}
}

// Cap returns how many events the ring keeps.
func (r *Ring) Cap() int { return len(r.buf) }

// restore puts events (oldest first), e.g. read back from a Log at start,
// into the ring as if they had been published before every later event.
// They are neither counted in Totals (which count this process's events)
// nor handed to subscribers (they were handled when they happened).
func (r *Ring) restore(evs []Event) {
	if len(evs) > len(r.buf) {
		evs = evs[len(evs)-len(r.buf):]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		r.buf[r.next] = e
		r.next = (r.next + 1) % len(r.buf)
		if r.next == 0 {
			r.full = true
		}
	}
}

// Since returns the events kept in the ring whose Time is not before t,
// newest first. (Every event is checked: the clock may have been set back.)
// It knows only the ring's latest Cap events: Scan counts a whole period.
func (r *Ring) Since(t time.Time) []Event {
	all := r.Recent(0)
	out := all[:0]
	for _, e := range all {
		if !e.Time.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// Recent returns up to n most recent events, newest first.
func (r *Ring) Recent(n int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := r.next
	if r.full {
		size = len(r.buf)
	}
	if n <= 0 || n > size {
		n = size
	}
	out := make([]Event, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.buf[(r.next-i+len(r.buf))%len(r.buf)])
	}
	return out
}

// Totals returns how many events of each kind were published.
func (r *Ring) Totals() map[Kind]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[Kind]uint64, len(r.total))
	for k, v := range r.total {
		m[k] = v
	}
	return m
}

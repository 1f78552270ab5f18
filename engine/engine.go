// Package engine is the policy engine behind both protocol servers: it holds
// the current policy table (swapped atomically on reload), resolves
// socketmap lookups with store.Store.Resolve (socketmap.Handler), and
// evaluates inbound rules for policy delegation requests (policyd.Handler,
// decided in inbound.go).
// It fails closed: anything it cannot decide is an error, which the servers
// answer with TEMP or "450 4.7.10", never a weaker answer than the table says.
package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tlspolicyd/tlspolicyd/events"
	"github.com/tlspolicyd/tlspolicyd/policyd"
	"github.com/tlspolicyd/tlspolicyd/socketmap"
	"github.com/tlspolicyd/tlspolicyd/store"
)

// snapshot is one loaded table with everything derived from it. It is
// immutable and replaced as a whole, so a request sees one table only.
type snapshot struct {
	store   *store.Store
	inbound *inboundIndex
}

// Engine answers lookups and policy requests from the current table. Use New.
type Engine struct {
	cur     atomic.Pointer[snapshot]
	learner store.Learner
	sources Sources
	log     *slog.Logger
	events  *events.Ring
	stats   *Stats
	warned  requestWarnings // undecidable requests logged (inbound_state.go)

	// OnTesting, if set, is called for every testing entry a lookup passed
	// over, so the prober can check what enforcing it would do. It must not
	// block.
	OnTesting func(e *store.Entry)
}

// New returns an Engine serving s (which may be nil until the first table
// loads: requests then fail closed). learner and ev may be nil.
func New(s *store.Store, learner store.Learner, ev *events.Ring, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.Default()
	}
	if ev == nil {
		ev = events.NewRing(1000)
	}
	e := &Engine{learner: learner, log: log, events: ev, stats: newStats(10000)}
	if s != nil {
		e.Swap(s)
	}
	return e
}

// Swap makes s the table every later request sees. Everything derived from
// the table is built before the swap; requests in flight finish on the
// table they started with.
func (e *Engine) Swap(s *store.Store) {
	e.cur.Store(&snapshot{store: s, inbound: newInboundIndex(s.InboundRules())})
}

// Store returns the table in use, or nil before the first load.
func (e *Engine) Store() *store.Store {
	if sn := e.cur.Load(); sn != nil {
		return sn.store
	}
	return nil
}

// Events returns the engine's event ring.
func (e *Engine) Events() *events.Ring { return e.events }

// Stats returns the per-sender-domain inbound TLS counters.
func (e *Engine) Stats() *Stats { return e.stats }

// SetLearner sets the probe cache that answers learned policies. Call it
// before serving starts.
func (e *Engine) SetLearner(l store.Learner) { e.learner = l }

// ErrNoTable is returned while no valid table has been loaded.
var ErrNoTable = errors.New("no valid policy table loaded")

// Resolve resolves key in map mapName against the current table.
func (e *Engine) Resolve(mapName, key string) (store.Answer, error) {
	sn := e.cur.Load()
	if sn == nil {
		return store.Answer{}, ErrNoTable
	}
	return sn.store.Resolve(mapName, key, e.learner)
}

// Lookup implements socketmap.Handler. An unknown map name is a
// configuration error (PERM); every other failure is returned as an error,
// which the socketmap server answers with TEMP so Postfix defers the mail.
func (e *Engine) Lookup(ctx context.Context, mapName, key string) (socketmap.Reply, error) {
	if err := ctx.Err(); err != nil {
		return socketmap.Reply{}, err
	}
	ans, err := e.ResolveContext(ctx, mapName, key)
	if err != nil {
		if errors.Is(err, store.ErrUnknownMap) {
			return socketmap.Reply{Status: socketmap.StatusPerm, Data: "unknown map"}, nil
		}
		return socketmap.Reply{}, err
	}
	if e.OnTesting != nil {
		for _, t := range ans.Testing {
			e.OnTesting(t)
		}
	}
	if !ans.Found {
		return socketmap.Reply{Status: socketmap.StatusNotFound}, nil
	}
	return socketmap.Reply{Status: socketmap.StatusOK, Data: ans.Data}, nil
}

// Evaluate applies the inbound rules of the current table to a request
// without side effects (no events, no counters): used by `query --inbound`.
func (e *Engine) Evaluate(req *policyd.Request) (Decision, error) {
	sn := e.cur.Load()
	if sn == nil {
		return Decision{}, ErrNoTable
	}
	in := fromRequest(req)
	return sn.inbound.evaluate(&in, nil), nil
}

// Check implements policyd.Handler: it evaluates the inbound rules, counts
// the request in the per-sender-domain TLS statistics and publishes an
// event for every decision that blocks or would block mail. It never
// answers OK. It keeps nothing of req (policyd.Handler's contract): the
// counters, events and log records hold copies.
func (e *Engine) Check(ctx context.Context, req *policyd.Request) (policyd.Action, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	sn := e.cur.Load()
	if sn == nil {
		return "", ErrNoTable
	}
	state, ok := e.protocolState(ctx, req)
	if !ok {
		return "DUNNO", nil
	}
	in := fromRequest(req)
	e.stats.observe(req.Get("instance"), &in.sender, in.Protocol)
	var buf [4]RuleResult
	decided, rule, matched := sn.inbound.decide(&in, buf[:0])
	if state == "END-OF-MESSAGE" && strings.HasPrefix(decided, "PREPEND") {
		decided = "DUNNO" // Postfix ignores PREPEND there; the event still says what a rule found
	}
	var text *eventText // built at the first event, shared by the others
	for _, m := range matched {
		if m.Met {
			continue
		}
		kind := events.InboundBlocked
		action := decided
		if m.cr.testing {
			kind = events.InboundWouldBlock
			action = m.cr.wouldAction
		} else if m.Rule != rule {
			continue // a stronger enforced rule decided; report that one
		}
		if text == nil {
			text = newEventText(&in)
		}
		now := time.Now() // one clock reading for the event and the log line
		ev := events.Event{
			Time: now, Kind: kind, Domain: text.domain, Rule: m.Rule.Name, Source: m.cr.source,
			Action: action, Reason: m.Reason, Client: text.client, Sender: text.sender,
		}
		e.events.Publish(ev)
		// The record goes to the handler directly, with typed attributes
		// (no boxing of nine values into interfaces) and no caller PC:
		// Logger.LogAttrs would walk the stack (runtime.Callers) for a
		// source the daemon's log does not print, 1 % of its CPU per
		// policy request in tlspolicyd-bench.
		if h := e.log.Handler(); h.Enabled(ctx, slog.LevelInfo) {
			r := slog.NewRecord(now, slog.LevelInfo, "inbound TLS policy", 0)
			r.AddAttrs(slog.String("event", string(kind)),
				slog.String("rule", m.Rule.Name), slog.String("source", ev.Source), slog.String("sender", ev.Sender),
				slog.String("recipient", text.recipient), slog.String("client", ev.Client),
				slog.String("tls", in.Protocol), slog.String("reason", m.Reason), slog.String("action", action))
			_ = h.Handle(ctx, r)
		}
	}
	return policyd.Action(decided), nil
}

// eventText is the request's text that events and log lines carry:
// sanitized (printable ASCII, bounded), and copied into one new string, so
// that an event kept in the ring holds 200-odd bytes rather than the whole
// request text, and one allocation serves all four fields.
type eventText struct {
	domain, sender, recipient, client string
}

func newEventText(in *inboundRequest) *eventText {
	b := make([]byte, 0, 256)
	b = appendSanitized(b, in.sender.domain)
	n1 := len(b)
	b = appendSanitized(b, in.Sender)
	n2 := len(b)
	b = appendSanitized(b, in.Recipient)
	n3 := len(b)
	// sanitize(client_name + "[" + client_address + "]"): each part
	// sanitized, the whole capped like one sanitized string.
	for _, part := range [...]string{in.ClientName, "[", in.ClientAddress, "]"} {
		b = appendSanitized(b, part)
	}
	b = b[:min(len(b), n3+sanitizeMax)]
	s := string(b)
	return &eventText{domain: s[:n1], sender: s[n1:n2], recipient: s[n2:n3], client: s[n3:]}
}

var (
	_ socketmap.Handler = (*Engine)(nil)
	_ policyd.Handler   = (*Engine)(nil)
)

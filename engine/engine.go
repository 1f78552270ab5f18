// Package engine is the policy engine behind both protocol servers: it holds
// the current policy table (swapped atomically on reload), resolves
// socketmap lookups with store.Store.Resolve (socketmap.Handler), and
// evaluates inbound rules for policy delegation requests (policyd.Handler).
// It fails closed: anything it cannot decide is an error, which the servers
// answer with TEMP or "450 4.7.10", never a weaker answer than the table says.
package engine

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

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
	log     *slog.Logger
	events  *events.Ring
	stats   *Stats

	// OnTesting, if set, is called for every testing entry a lookup passed
	// over, so the prober can check what enforcing it would do. It must not
	// block.
	OnTesting func(e *store.Entry)

	// fault is a test hook (fault_test.go): when set, Lookup and Check
	// call it first with "lookup" or "check", and a non-nil error, a panic
	// or a hang in it stands for a failure of resolution. Always nil in
	// production.
	fault func(op string) error
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
	e := &Engine{learner: learner, log: log, events: ev, stats: NewStats(10000)}
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
	if e.fault != nil {
		if err := e.fault("lookup"); err != nil {
			return socketmap.Reply{}, err
		}
	}
	ans, err := e.Resolve(mapName, key)
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
	return sn.inbound.evaluate(&in), nil
}

// Check implements policyd.Handler: it evaluates the inbound rules, counts
// the request in the per-sender-domain TLS statistics and publishes an
// event for every decision that blocks or would block mail. It never
// answers OK.
func (e *Engine) Check(ctx context.Context, req *policyd.Request) (policyd.Action, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if e.fault != nil {
		if err := e.fault("check"); err != nil {
			return "", err
		}
	}
	sn := e.cur.Load()
	if sn == nil {
		return "", ErrNoTable
	}
	in := fromRequest(req)
	e.stats.Observe(req.Get("instance"), in.Sender, in.Protocol)
	d := sn.inbound.evaluate(&in)
	for _, m := range d.Matched {
		if m.Met {
			continue
		}
		kind := events.InboundBlocked
		action := d.Action
		if m.Rule.Testing {
			kind = events.InboundWouldBlock
			action = "would " + m.Rule.Action
		} else if m.Rule != d.Rule {
			continue // a stronger enforced rule decided; report that one
		}
		_, dom := splitAddr(in.Sender)
		ev := events.Event{
			Kind: kind, Domain: sanitize(dom), Rule: m.Rule.Name, Source: m.Rule.Source.String(),
			Action: action, Reason: m.Reason, Client: sanitize(in.ClientName + "[" + in.ClientAddress + "]"),
			Sender: sanitize(in.Sender),
		}
		e.events.Publish(ev)
		e.log.Info("inbound TLS policy", "event", string(kind), "rule", m.Rule.Name, "source", ev.Source,
			"sender", ev.Sender, "recipient", sanitize(in.Recipient), "client", ev.Client,
			"tls", in.Protocol, "reason", m.Reason, "action", action)
	}
	return policyd.Action(d.Action), nil
}

func fromRequest(req *policyd.Request) inboundRequest {
	return inboundRequest{
		Sender:        req.Get("sender"),
		Recipient:     req.Get("recipient"),
		ClientAddress: req.Get("client_address"),
		ClientName:    req.Get("client_name"),
		Protocol:      req.Get("encryption_protocol"),
		CertFP:        req.Get("ccert_fingerprint"),
		PubkeyFP:      req.Get("ccert_pubkey_fingerprint"),
	}
}

var (
	_ socketmap.Handler = (*Engine)(nil)
	_ policyd.Handler   = (*Engine)(nil)
)
